"""A reader of TensorBoard event files, independent of TensorBoard: TFRecord framing + the Event proto."""

import struct
from pathlib import Path


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every event file under ``path`` (one run directory)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(Path(path).glob("events.out.tfevents.*")):
        blob = f.read_bytes()
        i = 0
        while i < len(blob):
            (length,) = struct.unpack("<Q", blob[i : i + 8])
            payload = blob[i + 12 : i + 12 + length]  # 8 length + 4 crc, then data, then 4 crc
            i += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out
