-- `static` route mode: the unix socket a lease's data plane binds instead of its port.
-- NULL means the port (every lease written before this column, and `routes` mode).
ALTER TABLE leases ADD COLUMN bind_socket TEXT;
