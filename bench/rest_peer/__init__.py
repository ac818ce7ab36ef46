"""The seed's REST design, as a peer the benchmark measures the Flow Manager against.

The seed (a FastAPI service, `POST /flow/execute` with the flow as JSON)
is what this project grew from; the issue "Performance, round two" asks
that Execute(seed) be measured beside it, in the same run and with the same
load generator, so the ratio holds on a noisy machine. `app` is that design,
condensed into one module (the seed splits it over main, api, schemas,
models, engine and tasks); `python -m bench.rest_peer` serves it with
uvicorn, one process, as the seed's README does.

Its own dependencies (FastAPI and uvicorn's fast HTTP parser and loop) are
pinned in bench/requirements.txt, installed by `make bench`: the service
itself never imports this package.
"""
