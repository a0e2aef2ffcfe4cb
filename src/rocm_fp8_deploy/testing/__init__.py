"""Test infrastructure of the deploy side: the stand-in bases (``standin``) that let CI build and
run our images without ROCm or a registry. Never used by a real build."""
