"""The public surface: what `import llamaberry` offers is exactly what `__all__` names."""

from __future__ import annotations

import subprocess
import sys
import types

import llamaberry


def test_every_name_in_all_is_importable():
    for name in llamaberry.__all__:
        assert getattr(llamaberry, name) is not None, name


def test_dir_lists_exactly_all():
    assert dir(llamaberry) == sorted(llamaberry.__all__)


def test_every_public_class_and_function_of_the_modules_in_all_is_exported_on_purpose():
    # Each name in __all__ resolves to the object its module defines, not to a stale copy.
    for name in llamaberry.__all__:
        value = getattr(llamaberry, name)
        if isinstance(value, type | types.FunctionType):
            module = sys.modules[value.__module__]
            assert getattr(module, name) is value


def test_an_unknown_name_is_an_attribute_error():
    try:
        llamaberry.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_package_loads_nothing_heavy():
    code = (
        "import sys, llamaberry\n"
        "print(sorted(m for m in ('pydantic', 'groq', 'openai', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_documented_entry_points_exist():
    engine = llamaberry.Engine
    for method in ("refine", "refine_stream", "single", "single_stream", "steps", "compare"):
        assert callable(getattr(engine, method)), method


def test_the_engine_takes_exactly_the_endpoint_settings_declared_for_it():
    # Its signature is written out for editors and help(); `Settings` is where they are declared.
    import inspect

    from llamaberry.core.settings import ENGINE_SETTINGS

    params = inspect.signature(llamaberry.Engine.__init__).parameters
    own = {
        "self",
        "turns",
        "settings",
        "client",
        "on_finish",
        "history",
        "limiter",
        "limiters",
        "options",
    }
    assert set(params) - own == set(ENGINE_SETTINGS)
    assert all(params[name].default is None for name in ENGINE_SETTINGS)


def test_every_provider_in_the_table_builds_its_own_client_class():
    from llamaberry.core import providers as table
    from llamaberry.core.settings import Settings
    from llamaberry.providers import CLIENTS, PROVIDERS, client_class
    from llamaberry.providers.base import ChatClient

    assert set(PROVIDERS) == set(Settings.model_fields["provider"].annotation.__args__)
    # The rows (core) and the client modules (providers) name the same providers, in order.
    assert tuple(CLIENTS) == table.NAMES == tuple(r.name for r in table.ROWS) == PROVIDERS
    assert Settings.model_fields["provider"].default == table.DEFAULT.name
    for name in PROVIDERS:
        cls = client_class(name)
        assert issubclass(cls, ChatClient) and cls.provider == name
        assert cls.row is table.PROVIDERS[name]


def test_an_unknown_provider_is_one_line_naming_the_choices():
    from llamaberry.providers import make_client

    try:
        make_client("nope", model="m")
    except llamaberry.InputError as error:
        assert str(error) == "Unknown provider 'nope'; choose one of: groq, openai, local."
    else:
        raise AssertionError("expected InputError")
