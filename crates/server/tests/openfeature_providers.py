"""Drives OpenFeature's own Python providers against a Vexil node (run by openfeature_providers.rs).

    python openfeature_providers.py rpc|in-process|ofrep HOST PORT

Prints one JSON object per line: {"step": ..., ...}. After "await-change" it reads one line from
stdin (the test changes a flag meanwhile) and then waits for the provider to see the change.
"""
import json
import sys
import time

from openfeature import api
from openfeature.evaluation_context import EvaluationContext

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "rpc":
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    provider = FlagdProvider(resolver_type=ResolverType.RPC, host=host, port=port, deadline_ms=3000)
elif mode == "in-process":
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType

    provider = FlagdProvider(resolver_type=ResolverType.IN_PROCESS, host=host, port=port, deadline_ms=3000)
else:
    from openfeature.contrib.provider.ofrep import OFREPProvider

    provider = OFREPProvider(f"http://{host}:{port}", timeout=5.0)


def say(**fields):
    print(json.dumps(fields), flush=True)


started = time.monotonic()
api.set_provider_and_wait(provider)
say(step="ready", seconds=round(time.monotonic() - started, 3))
client = api.get_client()


def details(kind, key, default, ctx=None):
    get = {
        "bool": client.get_boolean_details,
        "string": client.get_string_details,
        "int": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }[kind]
    d = get(key, default, ctx or EvaluationContext(targeting_key="user-1"))
    code = d.error_code.value if d.error_code else None
    reason = d.reason.value if hasattr(d.reason, "value") else d.reason
    return {"key": key, "value": d.value, "variant": d.variant, "reason": reason, "error": code}


pro = EvaluationContext(targeting_key="user-1", attributes={"plan": "pro"})
free = EvaluationContext(targeting_key="user-2", attributes={"plan": "free"})
say(step="eval", results=[
    details("bool", "banner", False, pro),
    details("bool", "banner", True, free),
    details("string", "color", "none"),
    details("int", "limit", 0),
    details("float", "ratio", 0.0),
    details("object", "cfg", {}),
    details("bool", "off", False),
    details("bool", "nodefault", False),
    details("bool", "missing", False),
    details("bool", "color", False),
])

# The RPC provider caches STATIC answers until the server's EventStream names the flag as
# changed; the in-process one evaluates the document the sync stream sent last; OFREP asks
# every time. Each way the change must show.
details("string", "color", "none")
say(step="await-change")
sys.stdin.readline()
deadline = time.monotonic() + 15
seen = details("string", "color", "none")
while seen["value"] != "#00f" and time.monotonic() < deadline:
    time.sleep(0.1)
    seen = details("string", "color", "none")
say(step="after-change", result=seen)
api.shutdown()
