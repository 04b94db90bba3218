-- A lease that binds a unix socket (`static` route mode) holds no edge port: it is stored
-- with port 0, and only leases without a socket are unique per active port. Without
-- this, every static allocation had to read every active port to pick an unused one.
DROP INDEX leases_active_port;
CREATE UNIQUE INDEX leases_active_port ON leases (edge_bind_port)
    WHERE state = 'active' AND bind_socket IS NULL;
