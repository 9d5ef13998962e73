"""Renders the Tutor plugin as `tutor config save` would, for TestTutorRender.

Tutor itself comes from no registry the tests can reach, so this loads
deploy/tutor/tutorcoordinator/plugin.py with a stand-in for tutor.hooks that
records what the plugin adds, builds the configuration Tutor would (Tutor's
own settings the plugin reads, the plugin's defaults and unique values, then
the --set values given as JSON), renders every templated value, every patch
and every template with Jinja2 (StrictUndefined, as Tutor does), and prints
them as JSON: {"config": {...}, "patches": {...}, "templates": {...}}.

    python3 render.py PLUGIN_DIR SETTINGS_JSON BCRYPT_HASH
"""

import json
import os
import secrets
import sys
import types

import jinja2

plugin_dir, settings, bcrypt_hash = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]


class _Filter:
    def __init__(self):
        self.items = []

    def add_item(self, item):
        self.items.append(item)

    def add_items(self, items):
        self.items.extend(items)

    def add(self):
        def register(func):
            self.items.append(func)
            return func

        return register


class _Filters:
    def __getattr__(self, name):
        f = _Filter()
        setattr(self, name, f)
        return f


hooks = types.SimpleNamespace(Filters=_Filters(), Actions=_Filters())
tutor = types.ModuleType("tutor")
tutor.hooks = hooks
sys.modules["tutor"] = tutor
sys.modules["tutor.hooks"] = hooks
# importlib_resources is the backport Tutor installs; the standard library's
# files() is the same API.
import importlib.resources  # noqa: E402

sys.modules["importlib_resources"] = importlib.resources
# Tutor's pycryptodome: the plugin hashes the dashboard password with it.
kdf = types.ModuleType("Crypto.Protocol.KDF")
kdf.bcrypt = lambda password, cost, salt: bcrypt_hash.encode()
for name in ("Crypto", "Crypto.Protocol"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["Crypto.Protocol.KDF"] = kdf

sys.path.insert(0, os.path.dirname(plugin_dir))
from tutorcoordinator import plugin  # noqa: E402,F401

env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
env.filters["random_string"] = lambda n: secrets.token_urlsafe(n)[:n]
for name, func in hooks.Filters.ENV_TEMPLATE_FILTERS.items:
    env.filters[name] = func

# Tutor's own settings that the plugin reads.
config = {
    "LMS_HOST": "lms.example.com",
    "DOCKER_IMAGE_REDIS": "docker.io/redis:7.4.5",
    "JWT_COMMON_ISSUER": "https://lms.example.com/oauth2",
    "JWT_COMMON_AUDIENCE": "openedx",
    "JWT_COMMON_SECRET_KEY": "a-jwt-secret-from-tutor-0123456789",
}
config.update(dict(hooks.Filters.CONFIG_DEFAULTS.items))
config.update(dict(hooks.Filters.CONFIG_UNIQUE.items))
config.update(settings)
for _ in range(3):  # values refer to values
    config = {k: env.from_string(v).render(**config) if isinstance(v, str) else v for k, v in config.items()}

patches = {}
for name, text in hooks.Filters.ENV_PATCHES.items:
    patches[name] = patches.get(name, "") + env.from_string(text).render(**config)
templates = {}
for root in hooks.Filters.ENV_TEMPLATE_ROOTS.items:
    for src, dest in hooks.Filters.ENV_TEMPLATE_TARGETS.items:
        for dirpath, _, files in os.walk(os.path.join(root, src)):
            for f in files:
                path = os.path.join(dirpath, f)
                rel = os.path.join(dest, os.path.relpath(path, root))
                with open(path, encoding="utf-8") as fh:
                    templates[rel] = env.from_string(fh.read()).render(**config)
json.dump({"config": config, "patches": patches, "templates": templates}, sys.stdout)
