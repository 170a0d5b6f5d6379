-- weir's own database, beside the one Tansu's schema is loaded into (postgres): the systems' tables, the outbox and
-- the exactly-once offsets live here, shared by every weir instance.
CREATE DATABASE weir;
