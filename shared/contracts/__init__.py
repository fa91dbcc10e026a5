"""Schemas of every event and command payload (the ``data`` of the envelope).

Each message is owned by the service that publishes it; consumers load ``data`` with
these schemas, which keep unknown fields (``INCLUDE``) so that a publisher may add
fields without breaking its readers. Field names follow the HTTP API: ``data`` carries
the resource as the API shows it.
"""


def name_key(name: str) -> str:
    """What makes two names typed by people (a checkpoint, a site, a region) the same
    name: ``cp4`` is ``CP4``, ``Sichuan `` is ``sichuan``, ``Col  du Lautaret`` is
    ``Col du Lautaret``."""
    return " ".join(name.split()).casefold()
