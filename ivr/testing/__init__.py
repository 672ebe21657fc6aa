"""Testing helpers shipped with ivr (see docs/testing.md): fakes for speech engines, the ACD's clock and agent
connector (``fakes``), fixture replays from pytest (``replay``), caller audio fixtures (``fixtures``) and
scripted SIP peers (``sip_caller``, ``sip_agent``, ``sip_torture``). Nothing on the call path imports them."""
