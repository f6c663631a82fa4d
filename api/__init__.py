"""The REST job service (FastAPI) lives here; see the FastAPI issue. It never imports ray or vllm."""
