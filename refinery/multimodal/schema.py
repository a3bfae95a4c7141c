"""The columns of the image–text and video assets, and of their quarantine files.

**Images travel as bytes.** Every image–text asset carries the original encoded image (``image``,
never re-encoded) in its Parquet rows, not a path into the inbox. A stage then never depends on
the inbox staying as it was, WebDataset shards need no extraction, identical input still gives
byte-identical files, and ``clip_filtered`` is a self-contained training shard. The price is
one copy of the bytes per stage (four in all), and batches of a few hundred rows instead of
thousands, so memory stays bounded. ``image_file`` keeps where the bytes came from
(``images/cat.jpg``, or ``shard-000.tar:000123.jpg`` inside a shard).

**Videos stay where they are.** A video is too large to copy at every stage, so ``raw_videos``
refers to the file in the inbox (``video_file``) and records its size and content hash; the
keyframe stages check both before decoding and reject the row (``video_changed``) if the file
changed since ingest. Selected frames are written as JPEG files under the storage folder.
"""

from __future__ import annotations

import pyarrow as pa

from refinery.schema import REASON_FIELDS

CAPTION_COLUMN = "caption"
QUESTION_COLUMN = "question"

IMAGE_TEXT_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("caption", pa.large_string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("meta", pa.string()),  # every input field not modelled here, as JSON
    pa.field("file", pa.string()),  # captions file or tar shard, relative to the source folder
    pa.field("line", pa.int64()),  # 1-based line/row of the captions file, or sample number in the shard
    pa.field("image_file", pa.string(), nullable=False),  # images/a.jpg, or shard.tar:key.jpg
    pa.field("image", pa.large_binary(), nullable=False),  # the original encoded bytes
    pa.field("image_format", pa.string()),  # JPEG, PNG, WEBP… as PIL names it
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("image_hash", pa.string()),  # blake2b-80 of the bytes, for dedup and joins
]
IMAGE_TEXT_SCHEMA = pa.schema(IMAGE_TEXT_FIELDS)

IMAGE_TEXT_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("caption", pa.large_string()),
        pa.field("image_file", pa.string()),
        pa.field("raw", pa.large_binary()),  # the bad image's bytes or the record's, so nothing is lost
        *REASON_FIELDS,
    ]
)

VIDEO_FIELDS = [
    pa.field("id", pa.string(), nullable=False),  # the question's id
    pa.field("question", pa.large_string(), nullable=False),
    pa.field("answer", pa.large_string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("meta", pa.string()),
    pa.field("file", pa.string()),  # questions file, relative to the source folder
    pa.field("line", pa.int64()),
    pa.field("video_file", pa.string(), nullable=False),  # relative to the source folder
    pa.field("video_id", pa.string(), nullable=False),  # content hash: names the frame folder
    pa.field("video_bytes", pa.int64(), nullable=False),
    pa.field("frames", pa.int64(), nullable=False),  # frames in the video, as the container reports
    pa.field("fps", pa.float64(), nullable=False),
    pa.field("duration", pa.float64(), nullable=False),  # seconds
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
]
VIDEO_SCHEMA = pa.schema(VIDEO_FIELDS)

VIDEO_QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("question", pa.large_string()),
        pa.field("video_file", pa.string()),
        pa.field("raw", pa.large_binary()),  # the question record, or a small bad file
        *REASON_FIELDS,
    ]
)

KEYFRAME_FIELDS = [
    pa.field("method", pa.string(), nullable=False),  # "query" (CLIP similarity) or "uniform"
    pa.field("frame_indices", pa.list_(pa.int64()), nullable=False),  # chronological
    pa.field("timestamps", pa.list_(pa.float64()), nullable=False),  # seconds, same order
    pa.field("scores", pa.list_(pa.float32()), nullable=False),  # cosine(frame, question), same order
    pa.field("frame_paths", pa.list_(pa.string()), nullable=False),  # JPEGs, relative to the storage root
    pa.field("frames_decoded", pa.int32(), nullable=False),  # for this video (shared by its questions)
]
# Timings stay out of the rows (they go to the metadata): unchanged input gives identical files.
