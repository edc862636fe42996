"""TensorBoard event files of scalars, encoded here.

An event file is a sequence of records in TFRecord framing (payload length, masked CRC-32C of
the length, payload, masked CRC-32C of the payload), each payload one ``Event`` protocol buffer
(TensorBoard's ``event.proto`` and ``summary.proto``): the first holds the file version, each
later one a step's ``Summary`` of (tag, simple_value) pairs, which TensorBoard shows as scalars.
Encoded here rather than through tensorboardX, which imports torch whenever torch is installed
(seconds at the start of every process that logs).
"""

import os
import socket
import struct
import time


def _crc32c_table() -> tuple[int, ...]:
  """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of each byte value."""
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> bytes:
  """TFRecord's masked CRC: rotated right by 15 bits plus a constant, little-endian."""
  crc = crc32c(data)
  return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(payload: bytes) -> bytes:
  """``payload`` framed as one TFRecord."""
  length = struct.pack('<Q', len(payload))
  return length + _masked_crc(length) + payload + _masked_crc(payload)


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    low, value = value & 0x7F, value >> 7
    out.append(low | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _length_delimited(field: int, data: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(data)) + data


def _event(wall_time: float, step: int, field: int, data: bytes) -> bytes:
  """An ``Event``: wall_time (1, double), step (2, int64) and one length-delimited field of its
  ``what`` (3: file_version, 5: summary)."""
  return (_varint(1 << 3 | 1) + struct.pack('<d', wall_time) + _varint(2 << 3 | 0) +
          _varint(step) + _length_delimited(field, data))


def file_version_event() -> bytes:
  """The record that opens every event file."""
  return record(_event(time.time(), 0, 3, b'brain.Event:2'))


def scalars_event(step: int, scalars: dict[str, float]) -> bytes:
  """The record of a ``Summary`` whose values are ``tag -> simple_value`` at ``step``."""
  values = b''.join(
      _length_delimited(1, _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) +
                        struct.pack('<f', value))
      for tag, value in scalars.items())
  return record(_event(time.time(), step, 5, values))


def file_name() -> str:
  """A name TensorBoard recognises as an event file, unique to this host, process and time."""
  return f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}'
