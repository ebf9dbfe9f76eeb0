"""`nodegraph serve`: an HTTP/WebSocket front end beside the CLI, over the same library API.

One long-lived `Engine` keeps models resident and the cache warm across requests; jobs run one at a
time on a worker thread, so the event loop never blocks. Two APIs share the queue: the native one
(docs/server_api.md, used by the page in `static/`) and ComfyUI's (`/prompt`, `/ws`, ...) for the
clients written for it. Layout: `settings` (what `serve` was given), `paths` (requests never leave
the served folders), `jobs` (the queue), `events` (thread -> WebSocket fan-out), `observer` (engine
callbacks -> events), `worker` (the thread that runs jobs), `sources` (request -> validated plan),
`describe` (a plan for the page), `native` / `comfy` / `object_info` (the routes), `app` (assembly).
"""
