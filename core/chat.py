"""The headless contract in one import: people and channels (core.channels), messages (core.messages), name rules.

Scripts, pages and tests write ``chat.send_message(...)``; the verbs live in the modules named above.
"""
from __future__ import annotations

from core.channels import (  # noqa: F401 (the contract)
    AI_SETTINGS_FOR_ADMINS,
    DEFAULT_PERSONA,
    MENTION,
    MODEL_MAX,
    PERSONA_MAX,
    REPLY_POLICIES,
    Channel,
    User,
    channel_overview,
    create_channel,
    create_user,
    get_channel,
    get_user,
    list_channels,
    list_users,
    system_prompt,
    update_channel,
    user_overview,
    wants_reply,
)
from core.ids import MAX_ID, check_id  # noqa: F401
from core.messages import (  # noqa: F401
    CONTENT_MAX_BYTES,
    MESSAGE_COLUMNS,
    MESSAGE_FROM,
    RECENT_LIMIT,
    channel_version,
    check_content,
    directory_version,
    get_message,
    list_messages,
    load_context,
    read_messages_uncached,
    reply_context,
    send_message,
    write_agent_response,
)
from core.names import (  # noqa: F401
    NAME_MAX,
    check_distinct,
    clean_name,
    has_visible,
    name_key,
    skeleton,
    valid_unicode,
)
from core.recent import Message  # noqa: F401
