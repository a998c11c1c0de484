"""Where calls live: the store interface and its implementations (SQLite: the default)."""

from voicecall.runtime.store.base import Store, StoredReply
from voicecall.runtime.store.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Store", "StoredReply"]
