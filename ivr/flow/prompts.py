"""System prompts: what the bot says on its own (apologies, retries, voicemail, queue announcements).

Every prompt a caller can hear comes from the flow, in the flow's language: built-in defaults per
language (the first two letters of ``language``: ``en``, ``ko``, ``zh``), overridden per flow under
``prompts:``. A language without defaults falls back to English, so a flow in another language should
override them all.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

PROMPT_DEFAULTS: dict[str, dict[str, str]] = {
    "en": {
        "no_input": "Sorry, I didn't hear anything.",
        "no_match": "Sorry, I didn't understand that.",
        "give_up": "Sorry, I'm having trouble understanding. Let me transfer you to someone who can help.",
        "confirm_retry": "Please say yes or no.",
        "confirm_no": "Sorry about that. Let's try again.",
        "error": "Sorry, something went wrong on our side. Let me transfer you to someone who can help.",
        "no_agents": "Sorry, no one is available to take your call right now. Please call again later.",
        "transfer_failed": "Sorry, I couldn't connect you there. Let me find someone else who can help.",
        "voicemail": "Please leave a message after the tone, and we will call you back.",
        "voicemail_thanks": "Thank you. Goodbye.",
        "queue_announcement": "You are number {position} in the queue. Your estimated wait is {wait_text}.",
        "wait_under_a_minute": "less than a minute",
        "wait_one_minute": "about 1 minute",
        "wait_minutes": "about {minutes} minutes",
        "callback_offer": "Your wait is {wait_text}. Press {key} to keep your place in the queue and be called back.",
        "callback_confirmed": "Thank you. You keep your place, and we will call you back. Goodbye.",
    },
    "ko": {
        "no_input": "죄송합니다. 잘 들리지 않았습니다.",
        "no_match": "죄송합니다. 잘 이해하지 못했습니다.",
        "give_up": "죄송합니다. 이해하기 어렵습니다. 상담원에게 연결해 드리겠습니다.",
        "confirm_retry": "네 또는 아니요로 말씀해 주세요.",
        "confirm_no": "죄송합니다. 다시 해 보겠습니다.",
        "error": "죄송합니다. 문제가 발생했습니다. 상담원에게 연결해 드리겠습니다.",
        "no_agents": "죄송합니다. 지금은 통화 가능한 상담원이 없습니다. 나중에 다시 전화해 주세요.",
        "transfer_failed": "죄송합니다. 연결하지 못했습니다. 도와 드릴 다른 상담원을 찾아 드리겠습니다.",
        "voicemail": "삐 소리가 나면 메시지를 남겨 주세요. 다시 연락드리겠습니다.",
        "voicemail_thanks": "감사합니다. 안녕히 계세요.",
        "queue_announcement": "고객님의 대기 순서는 {position}번째입니다. 예상 대기 시간은 {wait_text}입니다.",
        "wait_under_a_minute": "1분 미만",
        "wait_one_minute": "약 1분",
        "wait_minutes": "약 {minutes}분",
        "callback_offer": ("예상 대기 시간은 {wait_text}입니다. "
                           "대기 순서를 유지하고 전화를 다시 받으시려면 {key}번을 누르세요."),
        "callback_confirmed": "감사합니다. 대기 순서는 유지되며, 저희가 다시 전화드리겠습니다. 안녕히 계세요.",
    },
    "zh": {
        "no_input": "抱歉，我没有听到您的声音。",
        "no_match": "抱歉，我没有听懂。",
        "give_up": "抱歉，我没能听懂您的意思。我为您转接人工客服。",
        "confirm_retry": "请回答是或不是。",
        "confirm_no": "抱歉，我们再试一次。",
        "error": "抱歉，我们这边出了点问题。我为您转接人工客服。",
        "no_agents": "抱歉，目前没有客服人员可以接听您的电话。请稍后再拨。",
        "transfer_failed": "抱歉，无法为您接通。我为您转接其他可以帮助您的人员。",
        "voicemail": "请在提示音后留言，我们会给您回电。",
        "voicemail_thanks": "谢谢。再见。",
        "queue_announcement": "您前面的排队位置是第{position}位。预计等待时间{wait_text}。",
        "wait_under_a_minute": "不到一分钟",
        "wait_one_minute": "大约一分钟",
        "wait_minutes": "大约{minutes}分钟",
        "callback_offer": "预计等待时间{wait_text}。按{key}保留您的排队位置，我们会给您回电。",
        "callback_confirmed": "谢谢。您的排队位置已保留，我们会给您回电。再见。",
    },
}

PROMPT_NAMES = tuple(PROMPT_DEFAULTS["en"])

PROMPT_FIELDS: dict[str, frozenset[str]] = {
    "queue_announcement": frozenset({"position", "wait_text", "wait_minutes", "queue"}),
    "wait_minutes": frozenset({"minutes"}),
    "callback_offer": frozenset({"key", "wait_text"}),
}
"""The ``{placeholders}`` a prompt may use (prompts not listed take none)."""


def default_prompts(language: str) -> dict[str, str]:
    """The built-in system prompts for a flow language (``ko-KR`` → Korean; English when unknown)."""
    return dict(PROMPT_DEFAULTS.get(language[:2].lower(), PROMPT_DEFAULTS["en"]))


def system_prompts(language: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The language's defaults with a flow's ``prompts:`` on top."""
    return {**default_prompts(language), **(overrides or {})}


def placeholder_problem(name: str, text: str) -> str | None:
    """Why ``text`` cannot be the prompt ``name`` (a bad or unknown ``{placeholder}``), else None."""
    allowed = PROMPT_FIELDS.get(name, frozenset())
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    except ValueError as exc:
        return f"bad placeholder in prompt '{name}' ({exc}); write a literal brace as {{{{ or }}}}"
    unknown = sorted(fields - allowed)
    if unknown:
        hint = ", ".join("{" + f + "}" for f in sorted(allowed)) if allowed else "none"
        return f"unknown placeholder {{{unknown[0]}}} in prompt '{name}'; it may use: {hint}"
    return None


def wait_text(prompts: Mapping[str, str], seconds: float) -> str:
    """An estimated wait as the caller hears it ("less than a minute", "about 3 minutes")."""
    if seconds < 60:
        return prompts["wait_under_a_minute"]
    minutes = max(1, round(seconds / 60))
    if minutes == 1:
        return prompts["wait_one_minute"]
    return prompts["wait_minutes"].format(minutes=minutes)


def callback_offer(prompts: Mapping[str, str], key: str, wait_seconds: float) -> str:
    """The offer to keep one's place and be called back, in the flow's language."""
    return prompts["callback_offer"].format(key=key, wait_text=wait_text(prompts, wait_seconds))


def queue_announcement(prompts: Mapping[str, str], template: str | None, position: int, wait_seconds: float,
                       queue: str) -> str:
    """The position / estimated-wait announcement: the queue's own ``text`` when it has one, else the
    flow's ``queue_announcement``; the wait is spelled in the flow's language."""
    minutes = max(1, round(wait_seconds / 60))
    return (template or prompts["queue_announcement"]).format(
        position=position, wait_text=wait_text(prompts, wait_seconds), wait_minutes=minutes, queue=queue
    )
