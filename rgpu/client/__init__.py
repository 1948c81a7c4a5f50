"""The rgpu client daemon: server links, the GPU pool, application sessions."""
