"""The REST sidecar under /api/v1: keys and the image API, on the same storage as WebDAV.

    uss_dav.rest.app.make_rest_app(services) -> WSGI app   # mounted by uss_dav.app.Dispatcher

Modules: app (routes), image_api and key_api (endpoints), access (who may),
bodies (streaming uploads), thumbnails, names, wire (JSON and problem details).
"""

