"""What the benchmark scripts share, one job a module.

- `proc`: everything read from Linux /proc (process trees, CPU, memory, sockets); the only /proc parser,
  also used by tests/test_scaleout.py.
- `servers`: the servers under test and their peers as subprocesses (uss_dav, stock WsgiDAV, bare
  cheroot, nginx, copyparty); each says which durability it was measured with.
- `cheroot_app`, `stock_wsgidav`, `bare_cheroot`: the two small WSGI servers the benchmark runs itself.
- `client`, `response`, `scenarios`, `runner`: the load generator (one thread and one HTTP/1.1 connection on a
  raw socket per client, each response read into a buffer the connection keeps).
- `report`: the tables (markdown with ratios), the problems, the JSON dump.
- `cli`: the options the load benchmarks' command lines share.
"""
