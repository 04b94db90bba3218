# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mytunnel_global_optspecs
    string join \n v/version h/help
end

function __fish_mytunnel_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mytunnel_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mytunnel_using_subcommand
    set -l cmd (__fish_mytunnel_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mytunnel -n "__fish_mytunnel_needs_command" -s v -l version -d 'Print the version'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "http" -d 'Publish the app at <TARGET> until Ctrl-C'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "ls" -d 'List your leases'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "stop" -d 'Release a lease: its URL stops at once and the name is free again'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "rm" -d 'Delete a lease record (releasing it first if active)'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "doctor" -d 'Check each step from this machine to a working tunnel'
complete -c mytunnel -n "__fish_mytunnel_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l host-header -d 'The Host header your app sees: `rewrite` for the host it listens on (e.g. localhost:3000), or a host of your choice [default: the public host]. X-Forwarded-Host and X-Forwarded-Proto always carry the public host and https' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l name -d 'Publish at https://<NAME>.<base-domain> (default: a generated readable name)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l owner -d 'Accepted for compatibility; the edge takes the owner from your SSH user' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l ttl -d 'Lease TTL to ask for, e.g. 90s or 5m (clamped to 30s..24h) [default: the edge\'s, 2m]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l reconnect -d 'Reconnect when the SSH connection drops (--reconnect=false to exit instead)' -r -f -a "true\t''
false\t''"
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l inspect -d 'Serve the request inspector: a page with recent requests, their headers and bodies, and replay [default address: 127.0.0.1:4040, or the next free port up to 4049]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l inspect-keep -d 'Requests the inspector keeps (the oldest go first)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l inspect-body -d 'Bytes of each request and response body the inspector keeps, e.g. 64k or 1m' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l edge -d 'SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l ssh-bin -d 'The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l remote-bin -d 'mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l base-domain -d 'Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l ssh-option -d 'Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l config -d 'The client profile file [default: ~/.config/mytunnel/config.toml]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l db-path -d 'Remote --db-path: SQLite lease database file (unused when --db-url is set)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l caddy-admin-url -d 'Remote --caddy-admin-url: Caddy admin API; loopback or unix socket only' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l caddy-server -d 'Remote --caddy-server: Caddy HTTP server whose routes mytunnel manages' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l min-port -d 'Remote --min-port: Lowest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l max-port -d 'Remote --max-port: Highest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l lease-ttl -d 'Remote --lease-ttl: Lease time to live when the client asks for none' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l cleanup-interval -d 'Remote --cleanup-interval: How often serve expires leases without heartbeats' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l reconcile-interval -d 'Remote --reconcile-interval: How often serve makes Caddy\'s routes match the leases' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l health-timeout -d 'Remote --health-timeout: Bound on each health probe and admin API request' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l log-format -d 'Remote --log-format: serve\'s log format: text or json' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l max-leases-per-owner -d 'Remote --max-leases-per-owner: Active leases one user may hold; 0 means unlimited' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l upstream-insecure -d 'For an https:// target: accept any certificate, e.g. a self-signed one. The link to the app stays encrypted but its certificate is not checked: use it only for an app on this machine'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l force -d 'Take the name over from another lease (edge admins only)'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l json -d 'Print one JSON object per line on stdout (opened, then one per request) instead of text'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -s q -l quiet -d 'Print no line per request (the URL and status lines stay)'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l raw -d 'Carry bytes only: no request log, no inspector; the fastest path to the app'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -l no-ssh-mux -d 'Open one SSH connection per control command instead of sharing one'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand http" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l edge -d 'SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l ssh-bin -d 'The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l remote-bin -d 'mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l base-domain -d 'Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l ssh-option -d 'Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l config -d 'The client profile file [default: ~/.config/mytunnel/config.toml]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l db-path -d 'Remote --db-path: SQLite lease database file (unused when --db-url is set)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l caddy-admin-url -d 'Remote --caddy-admin-url: Caddy admin API; loopback or unix socket only' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l caddy-server -d 'Remote --caddy-server: Caddy HTTP server whose routes mytunnel manages' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l min-port -d 'Remote --min-port: Lowest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l max-port -d 'Remote --max-port: Highest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l lease-ttl -d 'Remote --lease-ttl: Lease time to live when the client asks for none' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l cleanup-interval -d 'Remote --cleanup-interval: How often serve expires leases without heartbeats' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l reconcile-interval -d 'Remote --reconcile-interval: How often serve makes Caddy\'s routes match the leases' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l health-timeout -d 'Remote --health-timeout: Bound on each health probe and admin API request' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l log-format -d 'Remote --log-format: serve\'s log format: text or json' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l max-leases-per-owner -d 'Remote --max-leases-per-owner: Active leases one user may hold; 0 means unlimited' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l json -d 'Print the lease DTOs as a JSON array'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l all -d 'Everyone\'s leases (edge admins only)'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -l no-ssh-mux -d 'Open one SSH connection per control command instead of sharing one'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand ls" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l edge -d 'SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l ssh-bin -d 'The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l remote-bin -d 'mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l base-domain -d 'Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l ssh-option -d 'Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l config -d 'The client profile file [default: ~/.config/mytunnel/config.toml]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l db-path -d 'Remote --db-path: SQLite lease database file (unused when --db-url is set)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l caddy-admin-url -d 'Remote --caddy-admin-url: Caddy admin API; loopback or unix socket only' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l caddy-server -d 'Remote --caddy-server: Caddy HTTP server whose routes mytunnel manages' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l min-port -d 'Remote --min-port: Lowest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l max-port -d 'Remote --max-port: Highest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l lease-ttl -d 'Remote --lease-ttl: Lease time to live when the client asks for none' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l cleanup-interval -d 'Remote --cleanup-interval: How often serve expires leases without heartbeats' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l reconcile-interval -d 'Remote --reconcile-interval: How often serve makes Caddy\'s routes match the leases' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l health-timeout -d 'Remote --health-timeout: Bound on each health probe and admin API request' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l log-format -d 'Remote --log-format: serve\'s log format: text or json' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l max-leases-per-owner -d 'Remote --max-leases-per-owner: Active leases one user may hold; 0 means unlimited' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l json -d 'Print the answer as JSON'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -l no-ssh-mux -d 'Open one SSH connection per control command instead of sharing one'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand stop" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l edge -d 'SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l ssh-bin -d 'The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l remote-bin -d 'mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l base-domain -d 'Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l ssh-option -d 'Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l config -d 'The client profile file [default: ~/.config/mytunnel/config.toml]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l db-path -d 'Remote --db-path: SQLite lease database file (unused when --db-url is set)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l caddy-admin-url -d 'Remote --caddy-admin-url: Caddy admin API; loopback or unix socket only' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l caddy-server -d 'Remote --caddy-server: Caddy HTTP server whose routes mytunnel manages' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l min-port -d 'Remote --min-port: Lowest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l max-port -d 'Remote --max-port: Highest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l lease-ttl -d 'Remote --lease-ttl: Lease time to live when the client asks for none' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l cleanup-interval -d 'Remote --cleanup-interval: How often serve expires leases without heartbeats' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l reconcile-interval -d 'Remote --reconcile-interval: How often serve makes Caddy\'s routes match the leases' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l health-timeout -d 'Remote --health-timeout: Bound on each health probe and admin API request' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l log-format -d 'Remote --log-format: serve\'s log format: text or json' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l max-leases-per-owner -d 'Remote --max-leases-per-owner: Active leases one user may hold; 0 means unlimited' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l json -d 'Print the answer as JSON'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -l no-ssh-mux -d 'Open one SSH connection per control command instead of sharing one'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand rm" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l app -d 'Also check the local app at this target (a port, host:port or URL, as for `http`)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l edge -d 'SSH destination (user@host, Host alias, ssh://user@host:port) or profile name [env: MYTUNNEL_EDGE]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l ssh-bin -d 'The ssh client [env: MYTUNNEL_SSH_BIN] [default: ssh]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l remote-bin -d 'mytunneld on the edge [env: MYTUNNEL_REMOTE_BIN] [default: mytunneld]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l base-domain -d 'Base domain the URL is expected under (checked, not sent) [env: MYTUNNEL_BASE_DOMAIN]' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l ssh-option -d 'Extra ssh option for every ssh run, e.g. --ssh-option Port=2222 (repeatable)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l config -d 'The client profile file [default: ~/.config/mytunnel/config.toml]' -r -F
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l db-path -d 'Remote --db-path: SQLite lease database file (unused when --db-url is set)' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l caddy-admin-url -d 'Remote --caddy-admin-url: Caddy admin API; loopback or unix socket only' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l caddy-server -d 'Remote --caddy-server: Caddy HTTP server whose routes mytunnel manages' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l min-port -d 'Remote --min-port: Lowest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l max-port -d 'Remote --max-port: Highest edge port a lease binds' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l lease-ttl -d 'Remote --lease-ttl: Lease time to live when the client asks for none' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l cleanup-interval -d 'Remote --cleanup-interval: How often serve expires leases without heartbeats' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l reconcile-interval -d 'Remote --reconcile-interval: How often serve makes Caddy\'s routes match the leases' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l health-timeout -d 'Remote --health-timeout: Bound on each health probe and admin API request' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l log-format -d 'Remote --log-format: serve\'s log format: text or json' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l max-leases-per-owner -d 'Remote --max-leases-per-owner: Active leases one user may hold; 0 means unlimited' -r
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l json -d 'Print the checks as JSON'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -l no-ssh-mux -d 'Open one SSH connection per control command instead of sharing one'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "http" -d 'Publish the app at <TARGET> until Ctrl-C'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "ls" -d 'List your leases'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "stop" -d 'Release a lease: its URL stops at once and the name is free again'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "rm" -d 'Delete a lease record (releasing it first if active)'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "doctor" -d 'Check each step from this machine to a working tunnel'
complete -c mytunnel -n "__fish_mytunnel_using_subcommand help; and not __fish_seen_subcommand_from http ls stop rm doctor help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
