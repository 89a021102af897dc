"""uss_dav: a WebDAV image store where each API key owns one collection."""

__version__ = "0.1.0"
