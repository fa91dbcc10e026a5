"""What all Partsflow services stand on; nothing here knows any one service."""
