"""The public surface: what `import llamaberry` offers is exactly what `__all__` names."""

from __future__ import annotations

import llamaberry


def test_every_name_in_all_is_importable():
    for name in llamaberry.__all__:
        assert hasattr(llamaberry, name), name


def test_public_names_are_exactly_all():
    public = {
        name
        for name, value in vars(llamaberry).items()
        if not name.startswith("_") and type(value).__name__ != "module"
    }
    assert public == set(llamaberry.__all__)


def test_the_documented_entry_points_exist():
    engine = llamaberry.Engine
    for method in ("refine", "refine_stream", "single", "single_stream", "models", "aclose"):
        assert callable(getattr(engine, method)), method
