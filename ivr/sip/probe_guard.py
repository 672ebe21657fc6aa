"""Answer OPTIONS probes 503 while an endpoint drains, so the edge's dispatcher takes its node out.

pjsua answers every out-of-dialog OPTIONS with 200 from its own module, and pjsua2 has no hook for it. This
registers a small pjsip module just ahead of pjsua's (through the pjsip functions the pjsua2 extension
exports) that, while ``draining()`` says so, answers out-of-dialog OPTIONS with a stateless 503. In-dialog
requests never reach it (the dialog layer takes them first), so calls in progress are not affected.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger("ivr.sip")

PRIORITY = 63
"""PJSIP_MOD_PRIORITY_APPLICATION - 1: after the transaction and dialog layers, before pjsua's OPTIONS handler."""
_OPTIONS = b"Request msg OPTIONS/"  # how pjsip_rx_data_get_info describes an OPTIONS request


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


_ON_RX = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _Module(ctypes.Structure):
    """pjsip_module (pjsip/sip_module.h)."""

    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p), ("name", _PjStr), ("id", ctypes.c_int),
                ("priority", ctypes.c_int), ("load", ctypes.c_void_p), ("start", ctypes.c_void_p),
                ("stop", ctypes.c_void_p), ("unload", ctypes.c_void_p), ("on_rx_request", _ON_RX),
                ("on_rx_response", ctypes.c_void_p), ("on_tx_request", ctypes.c_void_p),
                ("on_tx_response", ctypes.c_void_p), ("on_tsx_state", ctypes.c_void_p)]


def _pjsip() -> ctypes.CDLL:
    from pjsua2 import _pjsua2  # the extension holding pjsip; loading it again returns the same library

    lib = ctypes.CDLL(_pjsua2.__file__)
    lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
    lib.pjsip_rx_data_get_info.restype = ctypes.c_char_p
    lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
    lib.pjsip_endpt_respond_stateless.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                  ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


class ProbeGuard:
    """The module of one endpoint; ``install`` on the SIP thread after ``libInit``, keep it until ``libDestroy``."""

    def __init__(self, draining: Callable[[], bool]) -> None:
        self._draining = draining
        self._name = ctypes.create_string_buffer(b"mod-ivr-drain")
        self._callback = _ON_RX(self._on_rx_request)
        self._module = _Module(name=_PjStr(ctypes.cast(self._name, ctypes.c_char_p), len(self._name.value)),
                               id=-1, priority=PRIORITY, on_rx_request=self._callback)
        self._lib: ctypes.CDLL | None = None
        self.answered = 0
        """OPTIONS answered 503 so far."""

    def install(self) -> bool:
        """Register the module with the running pjsua endpoint; False (logged) when this pjsua2 build cannot."""
        try:
            lib = _pjsip()
            status = lib.pjsip_endpt_register_module(lib.pjsua_get_pjsip_endpt(), ctypes.byref(self._module))
        except (OSError, AttributeError, ImportError) as exc:
            status = str(exc)
        if status != 0:
            log.warning("SIP: cannot answer OPTIONS 503 while draining (%s); the edge will take this node out "
                        "only when it stops", status)
            return False
        self._lib = lib
        return True

    def _on_rx_request(self, rdata: int) -> int:
        if self._lib is None or not self._draining():
            return 0
        info = self._lib.pjsip_rx_data_get_info(rdata) or b""
        if not info.startswith(_OPTIONS):
            return 0
        self._lib.pjsip_endpt_respond_stateless(self._lib.pjsua_get_pjsip_endpt(), rdata, 503, None, None, None)
        self.answered += 1
        return 1
