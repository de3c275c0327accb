-- wrk: POST one small non-streaming completion (the body is set by run.py through WRK_BODY)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY") or '{"model":"bench-model","prompt":"hello router","max_tokens":4}'
