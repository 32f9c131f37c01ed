"""The reference server's sessions: authentication, resume, and detaching from sockets.

A session belongs to one API key and outlives its sockets (see :mod:`.state`). A
``newConnection`` with a known ``connectionSessionUUID`` of the same key resumes it: the
socket that held it loses it, the reply lists the tasks it holds (``knownTaskUUIDs``, with
the ``resume`` extension), and ``on_resume`` replays their results. A session detached
longer than the retention window is forgotten.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from protocol import NewConnection, NewConnectionSessionUUID, encode
from protocol.tables import KNOWN_EXTENSIONS, ErrorId

from .connection import Connection
from .state import KeyRing, ServerSession

__all__ = ["Sessions"]


class Sessions:
    """Keys and the sessions of every key, by ``connectionSessionUUID``.

    Args:
        keys: the accepted API keys.
        clock: monotonic seconds (when a session was detached).
        on_resume: called with a resumed session and the taskUUIDs it holds.
        on_forget: called with a session forgotten after the retention window.
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        clock: Callable[[], float],
        on_resume: Callable[[ServerSession, list[str]], None],
        on_forget: Callable[[ServerSession], None],
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._on_resume = on_resume
        self._on_forget = on_forget
        self._sessions: dict[str, ServerSession] = {}

    def get(self, session_uuid: str) -> ServerSession | None:
        """The session of ``session_uuid``, if it is still kept."""
        return self._sessions.get(session_uuid)

    def authenticate(self, conn: Connection, message: NewConnection) -> None:
        """Attach a new or resumed session to ``conn``, or refuse the key or the session."""
        key_id = self._keys.identify(message.api_key)
        if key_id is None:
            conn.refuse(ErrorId.INVALID_API_KEY, "invalid API key")
            return
        if conn.session is not None:
            text = "newConnection: this connection is already authenticated"
            conn.send_error(ErrorId.VALIDATION_ERROR, text)
            return
        wanted = message.extensions
        extensions = frozenset(wanted or ()) & KNOWN_EXTENSIONS
        resume = message.connection_session_uuid
        session = self._sessions.get(resume.lower()) if resume else None
        if session is not None and session.key_id != key_id:
            conn.refuse(ErrorId.SESSION_REFUSED, "the session belongs to another API key")
            return
        if session is None:
            session = ServerSession(str(uuid.uuid4()), key_id)
            self._sessions[session.uuid] = session
            known = None
        else:
            previous = session.connection
            if previous is not None:  # resumed elsewhere: the old socket loses the session
                self.detach(previous)
                previous.close(1000, "session resumed on another connection")
            known = sorted(session.held())
        session.extensions = extensions
        session.connection, session.detached_at = conn, None
        conn.attach(session)
        conn.on_lost = session.undelivered.add
        fields: dict[str, Any] = {"connection_session_uuid": session.uuid}
        if wanted is not None:
            fields["extensions"] = tuple(sorted(extensions))
        if known is not None and "resume" in extensions:
            fields["known_task_uuids"] = tuple(known)
        conn.send(encode(NewConnectionSessionUUID(**fields)))
        if known is not None:
            self._on_resume(session, known)

    def detach(self, conn: Connection) -> None:
        """``conn`` is gone: its session waits, detached, for a resume."""
        session, conn.session = conn.session, None
        if session is not None and session.connection is conn:
            session.connection = None
            session.detached_at = self._clock()

    def sweep(self, now: float, retention: float) -> None:
        """Forget sessions detached for more than ``retention`` seconds."""
        for session_uuid, session in list(self._sessions.items()):
            if session.detached_at is not None and now - session.detached_at > retention:
                del self._sessions[session_uuid]
                self._on_forget(session)
