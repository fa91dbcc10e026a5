from services.shipments.models import Base
from shared.db import run_migrations

run_migrations(Base.metadata)
