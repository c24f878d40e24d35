"""One folder per FlexCache strategy, named after it: `<name>/__init__.py` (torch-free traits) and `<name>/<name>.py`
(the class). The registry lists these folders; see flex_cache/registry.py."""
