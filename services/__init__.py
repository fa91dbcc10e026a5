"""The Partsflow services (inventory, shipments, tracking) and the composition roots
that know all three: the command line and the embedded one-process system."""
