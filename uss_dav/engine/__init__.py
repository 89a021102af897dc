"""uss_dav's HTTP/1.1 engine: request heads under RFC 9112's rules, bodies, responses with sendfile, connections and the server."""
