"""The REST job service (FastAPI): `create_app` in `api/app.py`, started by `stepwise serve`.

It never imports ray or vllm and never runs a job in a request: jobs run in their own processes, started by
`pipeline.service.JobService`.
"""
