# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mytunneld_global_optspecs
    string join \n env-file= h/help V/version
end

function __fish_mytunneld_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mytunneld_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mytunneld_using_subcommand
    set -l cmd (__fish_mytunneld_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mytunneld -n "__fish_mytunneld_needs_command" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_needs_command" -s h -l help -d 'Print help'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -s V -l version -d 'Print version'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "serve" -d 'Run the cleanup and reconcile loops until SIGTERM or SIGINT'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "ctl" -d 'One control operation; prints one JSON document (see `mytunneld ctl --help`)'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "gate" -d 'SSH forced command for tunnel keys: allows only `mytunneld ctl <verb>` and tunnel sessions'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "authorized-keys" -d 'sshd\'s AuthorizedKeysCommand: prints USER\'s tunnel keys, each limited to what a tunnel key may do'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "config" -d 'Print every setting as serve resolves it, where its value came from, and what is refused'
complete -c mytunneld -n "__fish_mytunneld_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l db-path -d 'SQLite lease database file (unused when --db-url is set) [env: MYTUNNEL_DB_PATH] [default: /var/lib/mytunneld/leases.db]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l db-url -d 'PostgreSQL lease database shared by several edges (postgres://...); replaces --db-path. Set it in the env file: it may hold a password [env: MYTUNNEL_DB_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l edge-id -d 'This edge\'s id among the edges sharing a --db-url database: each edge routes the leases allocated through it (a-z, 0-9, -) [env: MYTUNNEL_EDGE_ID] [default: local]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l edge-url -d 'Where the other edges sharing the database reach this edge\'s Caddy to forward its tunnels\' hosts (https://NAME, or http://ADDRESS on a private network); unset: they do not [env: MYTUNNEL_EDGE_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l base-domain -d 'Tunnels are published at https://<slug>.<base-domain> (required to allocate) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l caddy-admin-url -d 'Caddy admin API; loopback or unix socket only [env: MYTUNNEL_CADDY_ADMIN_URL] [default: http://127.0.0.1:2019]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l caddy-server -d 'Caddy HTTP server whose routes mytunnel manages [env: MYTUNNEL_CADDY_SERVER] [default: srv0]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l min-port -d 'Lowest edge port a lease binds [env: MYTUNNEL_MIN_PORT] [default: 21000]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l max-port -d 'Highest edge port a lease binds [env: MYTUNNEL_MAX_PORT] [default: 21999]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l lease-ttl -d 'Lease time to live when the client asks for none [env: MYTUNNEL_LEASE_TTL] [default: 2m]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l cleanup-interval -d 'How often serve expires leases without heartbeats [env: MYTUNNEL_CLEANUP_INTERVAL] [default: 30s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l reconcile-interval -d 'How often serve makes Caddy\'s routes match the leases [env: MYTUNNEL_RECONCILE_INTERVAL] [default: 60s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l health-timeout -d 'Bound on each health probe and admin API request [env: MYTUNNEL_HEALTH_TIMEOUT] [default: 5s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l log-format -d 'serve\'s log format: text or json [env: MYTUNNEL_LOG_FORMAT] [default: text]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l max-leases-per-owner -d 'Active leases one user may hold; 0 means unlimited [env: MYTUNNEL_MAX_LEASES_PER_OWNER] [default: 10]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l admin-users -d 'Comma list of users who may --force, list --all and reconcile [env: MYTUNNEL_ADMIN_USERS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l tombstone-retention -d 'How long released/expired tombstones are kept [env: MYTUNNEL_TOMBSTONE_RETENTION] [default: 7d]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l reserved-slugs -d 'Comma list of names no tunnel may take (default: www, api, admin, …) [env: MYTUNNEL_RESERVED_SLUGS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l route-mode -d 'static: one wildcard Caddy route to per-owner unix sockets (no Caddy reload per lease); routes: one Caddy route per lease to a loopback port [env: MYTUNNEL_ROUTE_MODE] [default: routes]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l socket-dir -d 'static mode: root of hosts/ (written by serve) and owners/<user>/ (sockets) [env: MYTUNNEL_SOCKET_DIR] [default: /var/lib/mytunnel-sockets]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l keys-dir -d 'Tunnel keys read by `mytunneld authorized-keys <user>` [env: MYTUNNEL_KEYS_DIR] [default: /etc/mytunneld/keys]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l tls-ask-listen -d 'Answer Caddy\'s on-demand TLS `ask` here (loopback IP:PORT): yes only for hosts of active leases; off when unset [env: MYTUNNEL_TLS_ASK_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l metrics-listen -d 'Serve Prometheus metrics at GET /metrics here (loopback IP:PORT, e.g. 127.0.0.1:9464); off when unset [env: MYTUNNEL_METRICS_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand serve" -s h -l help -d 'Print help'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand ctl" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand gate" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand gate" -s h -l help -d 'Print help'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l gate-command -d 'The forced command written into every key [default: this binary\'s gate, with --env-file when not the default]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l db-path -d 'SQLite lease database file (unused when --db-url is set) [env: MYTUNNEL_DB_PATH] [default: /var/lib/mytunneld/leases.db]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l db-url -d 'PostgreSQL lease database shared by several edges (postgres://...); replaces --db-path. Set it in the env file: it may hold a password [env: MYTUNNEL_DB_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l edge-id -d 'This edge\'s id among the edges sharing a --db-url database: each edge routes the leases allocated through it (a-z, 0-9, -) [env: MYTUNNEL_EDGE_ID] [default: local]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l edge-url -d 'Where the other edges sharing the database reach this edge\'s Caddy to forward its tunnels\' hosts (https://NAME, or http://ADDRESS on a private network); unset: they do not [env: MYTUNNEL_EDGE_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l base-domain -d 'Tunnels are published at https://<slug>.<base-domain> (required to allocate) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l caddy-admin-url -d 'Caddy admin API; loopback or unix socket only [env: MYTUNNEL_CADDY_ADMIN_URL] [default: http://127.0.0.1:2019]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l caddy-server -d 'Caddy HTTP server whose routes mytunnel manages [env: MYTUNNEL_CADDY_SERVER] [default: srv0]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l min-port -d 'Lowest edge port a lease binds [env: MYTUNNEL_MIN_PORT] [default: 21000]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l max-port -d 'Highest edge port a lease binds [env: MYTUNNEL_MAX_PORT] [default: 21999]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l lease-ttl -d 'Lease time to live when the client asks for none [env: MYTUNNEL_LEASE_TTL] [default: 2m]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l cleanup-interval -d 'How often serve expires leases without heartbeats [env: MYTUNNEL_CLEANUP_INTERVAL] [default: 30s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l reconcile-interval -d 'How often serve makes Caddy\'s routes match the leases [env: MYTUNNEL_RECONCILE_INTERVAL] [default: 60s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l health-timeout -d 'Bound on each health probe and admin API request [env: MYTUNNEL_HEALTH_TIMEOUT] [default: 5s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l log-format -d 'serve\'s log format: text or json [env: MYTUNNEL_LOG_FORMAT] [default: text]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l max-leases-per-owner -d 'Active leases one user may hold; 0 means unlimited [env: MYTUNNEL_MAX_LEASES_PER_OWNER] [default: 10]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l admin-users -d 'Comma list of users who may --force, list --all and reconcile [env: MYTUNNEL_ADMIN_USERS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l tombstone-retention -d 'How long released/expired tombstones are kept [env: MYTUNNEL_TOMBSTONE_RETENTION] [default: 7d]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l reserved-slugs -d 'Comma list of names no tunnel may take (default: www, api, admin, …) [env: MYTUNNEL_RESERVED_SLUGS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l route-mode -d 'static: one wildcard Caddy route to per-owner unix sockets (no Caddy reload per lease); routes: one Caddy route per lease to a loopback port [env: MYTUNNEL_ROUTE_MODE] [default: routes]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l socket-dir -d 'static mode: root of hosts/ (written by serve) and owners/<user>/ (sockets) [env: MYTUNNEL_SOCKET_DIR] [default: /var/lib/mytunnel-sockets]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l keys-dir -d 'Tunnel keys read by `mytunneld authorized-keys <user>` [env: MYTUNNEL_KEYS_DIR] [default: /etc/mytunneld/keys]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l tls-ask-listen -d 'Answer Caddy\'s on-demand TLS `ask` here (loopback IP:PORT): yes only for hosts of active leases; off when unset [env: MYTUNNEL_TLS_ASK_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l metrics-listen -d 'Serve Prometheus metrics at GET /metrics here (loopback IP:PORT, e.g. 127.0.0.1:9464); off when unset [env: MYTUNNEL_METRICS_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand authorized-keys" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l db-path -d 'SQLite lease database file (unused when --db-url is set) [env: MYTUNNEL_DB_PATH] [default: /var/lib/mytunneld/leases.db]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l db-url -d 'PostgreSQL lease database shared by several edges (postgres://...); replaces --db-path. Set it in the env file: it may hold a password [env: MYTUNNEL_DB_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l edge-id -d 'This edge\'s id among the edges sharing a --db-url database: each edge routes the leases allocated through it (a-z, 0-9, -) [env: MYTUNNEL_EDGE_ID] [default: local]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l edge-url -d 'Where the other edges sharing the database reach this edge\'s Caddy to forward its tunnels\' hosts (https://NAME, or http://ADDRESS on a private network); unset: they do not [env: MYTUNNEL_EDGE_URL]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l base-domain -d 'Tunnels are published at https://<slug>.<base-domain> (required to allocate) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l caddy-admin-url -d 'Caddy admin API; loopback or unix socket only [env: MYTUNNEL_CADDY_ADMIN_URL] [default: http://127.0.0.1:2019]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l caddy-server -d 'Caddy HTTP server whose routes mytunnel manages [env: MYTUNNEL_CADDY_SERVER] [default: srv0]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l min-port -d 'Lowest edge port a lease binds [env: MYTUNNEL_MIN_PORT] [default: 21000]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l max-port -d 'Highest edge port a lease binds [env: MYTUNNEL_MAX_PORT] [default: 21999]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l lease-ttl -d 'Lease time to live when the client asks for none [env: MYTUNNEL_LEASE_TTL] [default: 2m]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l cleanup-interval -d 'How often serve expires leases without heartbeats [env: MYTUNNEL_CLEANUP_INTERVAL] [default: 30s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l reconcile-interval -d 'How often serve makes Caddy\'s routes match the leases [env: MYTUNNEL_RECONCILE_INTERVAL] [default: 60s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l health-timeout -d 'Bound on each health probe and admin API request [env: MYTUNNEL_HEALTH_TIMEOUT] [default: 5s]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l log-format -d 'serve\'s log format: text or json [env: MYTUNNEL_LOG_FORMAT] [default: text]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l max-leases-per-owner -d 'Active leases one user may hold; 0 means unlimited [env: MYTUNNEL_MAX_LEASES_PER_OWNER] [default: 10]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l admin-users -d 'Comma list of users who may --force, list --all and reconcile [env: MYTUNNEL_ADMIN_USERS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l tombstone-retention -d 'How long released/expired tombstones are kept [env: MYTUNNEL_TOMBSTONE_RETENTION] [default: 7d]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l reserved-slugs -d 'Comma list of names no tunnel may take (default: www, api, admin, …) [env: MYTUNNEL_RESERVED_SLUGS]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l route-mode -d 'static: one wildcard Caddy route to per-owner unix sockets (no Caddy reload per lease); routes: one Caddy route per lease to a loopback port [env: MYTUNNEL_ROUTE_MODE] [default: routes]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l socket-dir -d 'static mode: root of hosts/ (written by serve) and owners/<user>/ (sockets) [env: MYTUNNEL_SOCKET_DIR] [default: /var/lib/mytunnel-sockets]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l keys-dir -d 'Tunnel keys read by `mytunneld authorized-keys <user>` [env: MYTUNNEL_KEYS_DIR] [default: /etc/mytunneld/keys]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l tls-ask-listen -d 'Answer Caddy\'s on-demand TLS `ask` here (loopback IP:PORT): yes only for hosts of active leases; off when unset [env: MYTUNNEL_TLS_ASK_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l metrics-listen -d 'Serve Prometheus metrics at GET /metrics here (loopback IP:PORT, e.g. 127.0.0.1:9464); off when unset [env: MYTUNNEL_METRICS_LISTEN]' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l env-file -d 'Env file of KEY=VALUE settings, read by serve, ctl, gate, authorized-keys and config' -r
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -l json -d 'Print one JSON document instead of text'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "serve" -d 'Run the cleanup and reconcile loops until SIGTERM or SIGINT'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "ctl" -d 'One control operation; prints one JSON document (see `mytunneld ctl --help`)'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "gate" -d 'SSH forced command for tunnel keys: allows only `mytunneld ctl <verb>` and tunnel sessions'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "authorized-keys" -d 'sshd\'s AuthorizedKeysCommand: prints USER\'s tunnel keys, each limited to what a tunnel key may do'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "config" -d 'Print every setting as serve resolves it, where its value came from, and what is refused'
complete -c mytunneld -n "__fish_mytunneld_using_subcommand help; and not __fish_seen_subcommand_from serve ctl gate authorized-keys config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
