"""Wire format, framing and test networks for Raft messages."""

from raft_trio.transport.codec import (
    WIRE_TAGS,
    CodecError,
    decode_message,
    decode_message_packed,
    encode_message,
)
from raft_trio.transport.framing import (
    DEFAULT_MAX_FRAME,
    FrameError,
    FrameReader,
    frame,
    send_frames,
)
from raft_trio.transport.memory import MemoryEndpoint, MemoryNetwork, NetworkStats

__all__ = [
    "DEFAULT_MAX_FRAME",
    "WIRE_TAGS",
    "CodecError",
    "FrameError",
    "FrameReader",
    "MemoryEndpoint",
    "MemoryNetwork",
    "NetworkStats",
    "decode_message",
    "decode_message_packed",
    "encode_message",
    "frame",
    "send_frames",
]
