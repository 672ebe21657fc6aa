"""Testing helpers shipped with ivr: scripted SIP callers, fixture replays."""
