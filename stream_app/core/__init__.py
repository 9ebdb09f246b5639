"""The processing core: plain synchronous Python, no I/O, no Faust, Redis or boto3 imports."""
