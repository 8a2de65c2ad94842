"""Reading one setting of CaImAn's params, whatever holds them (``CNMFParams`` or a dict)."""

from __future__ import annotations

__all__ = ["params_value"]


def params_value(params, group: str, key: str):
    """``params.get(group, key)`` of a CaImAn ``CNMFParams``, ``params[group][key]`` of a dict.

    Returns None when ``params`` is None or lacks the entry.

    Examples
    --------
    >>> params_value({"init": {"gSig": (4, 4)}}, "init", "gSig")
    (4, 4)
    """
    if params is None:
        return None
    getter = getattr(params, "get", None)
    if callable(getter) and not isinstance(params, dict):
        try:
            return getter(group, key)
        except (KeyError, AttributeError, TypeError):
            return None
    section = params.get(group) if isinstance(params, dict) else getattr(params, group, None)
    if isinstance(section, dict):
        return section.get(key)
    return None
