"""Reading videos frame by frame, and writing overlay videos.

    video = open_video("clip.mp4")        # or a folder of JPEG/PNG frames, or an image file
    len(video), video.height, video.width
    frame = video.frame(0)                 # (H, W, 3) uint8 RGB, decoded on demand

Frames are decoded lazily and kept in a small LRU cache, so a long video never sits in memory
whole. Containers (MP4, MOV, MKV, AVI, WebM, ...) are read with PyAV; random access seeks to the
closest key frame before the wanted frame and decodes forward. A folder of frames is sorted by
the integer in the file names ("00012.jpg" -> 12), else by name, as the official loader does.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .image_io import read_image, to_rgb_array

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_CACHE_FRAMES = 16


class Video:
    """A sequence of RGB frames of one size. Subclasses implement ``_read(index)``."""

    def __init__(self, num_frames: int, height: int, width: int, name: str, cache_frames: int = DEFAULT_CACHE_FRAMES,
                 fps: float | None = None):
        self.num_frames = num_frames
        self.height = height
        self.width = width
        self.name = name
        self.fps = fps
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))

    def __len__(self) -> int:
        return self.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the original frames."""
        return self.height, self.width

    def check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise InvalidInputError(f"frame index must be an integer; got {index!r}")
        index = int(index)
        if not 0 <= index < self.num_frames:
            raise InvalidInputError(f"frame index {index} is out of range: {self.name} has {self.num_frames} frames "
                                    f"(valid indices 0..{self.num_frames - 1})")
        return index

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as an (H, W, 3) uint8 RGB array (read-only; copy before editing)."""
        index = self.check_index(index)
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        return self._remember(index, self._read(index))

    def _remember(self, index: int, array: np.ndarray) -> np.ndarray:
        if tuple(array.shape[:2]) != (self.height, self.width):
            raise InvalidInputError(f"frame {index} of {self.name} is {array.shape[1]}x{array.shape[0]} but the video "
                                    f"is {self.width}x{self.height}; all frames must have one size")
        array = array.view()  # read-only view: the caller's own array stays writable
        array.setflags(write=False)
        self._cache[index] = array
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)
        return array

    def __getitem__(self, index: int) -> np.ndarray:
        return self.frame(index)

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(self.num_frames):
            yield self.frame(index)

    def _read(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        cache = getattr(self, "_cache", None)
        if cache is not None:
            cache.clear()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, frames={self.num_frames}, size={self.width}x{self.height})"


class ArrayVideo(Video):
    """Frames already in memory: a (T, H, W, 3) array or a list of images."""

    def __init__(self, frames, name: str = "video"):
        arrays = [to_rgb_array(f) for f in frames]
        if not arrays:
            raise InvalidInputError("the video has no frames")
        height, width = arrays[0].shape[:2]
        super().__init__(len(arrays), height, width, name, cache_frames=1)
        for index, array in enumerate(arrays):
            if array.shape[:2] != (height, width):
                raise InvalidInputError(f"frame {index} is {array.shape[1]}x{array.shape[0]} but frame 0 is "
                                        f"{width}x{height}; all frames must have one size")
        self._frames = arrays

    def _read(self, index: int) -> np.ndarray:
        return self._frames[index]


def _frame_sort_key(names: list[str]) -> list[str]:
    try:
        return sorted(names, key=lambda name: int(os.path.splitext(name)[0]))
    except ValueError:
        return sorted(names)


class FolderVideo(Video):
    """A folder of image files, one per frame."""

    def __init__(self, folder: str | os.PathLike, cache_frames: int = DEFAULT_CACHE_FRAMES):
        folder = Path(folder)
        names = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        if not names:
            raise InvalidInputError(f"no frames found in {folder}: expected image files "
                                    f"({', '.join(IMAGE_EXTENSIONS)}) named by frame index, e.g. 00000.jpg")
        self.paths = [folder / name for name in _frame_sort_key(names)]
        first = np.asarray(read_image(self.paths[0]))
        super().__init__(len(self.paths), first.shape[0], first.shape[1], str(folder), cache_frames)
        self._remember(0, first)

    def _read(self, index: int) -> np.ndarray:
        return np.asarray(read_image(self.paths[index]))


def _import_av():
    try:
        import av
    except ImportError:  # pragma: no cover - av is a dependency
        raise InvalidInputError("reading video files needs PyAV: pip install av "
                                "(or pass a folder of JPEG/PNG frames)") from None
    return av


class ContainerVideo(Video):
    """A video file decoded with PyAV (FFmpeg).

    At open the packets are indexed without decoding (frame count, presentation times, key
    frames). Reading frame i continues the running decoder when i is a little ahead of it,
    otherwise seeks to the last key frame at or before i and decodes forward; every decoded
    frame passes through the cache. Streams without timestamps are decoded from the start.
    """

    def __init__(self, path: str | os.PathLike, cache_frames: int = DEFAULT_CACHE_FRAMES):
        self._av = _import_av()
        self.path = Path(path)
        self._container = None
        self._decoder: Iterator | None = None
        self._next = 0  # index of the frame the running decoder yields next (timestamp-less mode)
        self._last_decoded: int | None = None
        try:
            self._open()
            stream = self._container.streams.video[0]
            pts, keyframes = [], []
            for packet in self._container.demux(stream):
                if packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframes.append(packet.pts)
            width, height = stream.codec_context.width, stream.codec_context.height
            rate = stream.average_rate or stream.guessed_rate
        except self._av.FFmpegError as exc:
            self.close()
            raise InvalidInputError(f"{self.path} is not a readable video ({exc})") from None
        except InvalidInputError:
            self.close()
            raise
        if not pts:
            self.close()
            raise InvalidInputError(f"{self.path} contains no video frames")
        self._timed = all(p is not None for p in pts) and len(set(pts)) == len(pts)
        self._pts = sorted(pts) if self._timed else []
        self._keyframes = sorted(p for p in keyframes if p is not None) if self._timed else []
        if self._timed and (not self._keyframes or self._keyframes[0] != self._pts[0]):
            self._keyframes.insert(0, self._pts[0])
        super().__init__(len(pts), height, width, str(self.path), cache_frames,
                         fps=float(rate) if rate else None)
        self._restart()

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = self._av.open(str(self.path))
        if not self._container.streams.video:
            raise InvalidInputError(f"{self.path} has no video stream")
        self._container.streams.video[0].thread_type = "AUTO"

    def _restart(self, seek_pts: int | None = None) -> None:
        if seek_pts is None:
            self._open()
        else:
            self._container.seek(seek_pts, stream=self._container.streams.video[0], backward=True, any_frame=False)
        self._decoder = iter(self._container.decode(self._container.streams.video[0]))
        self._next = 0
        self._last_decoded = None

    def _index_of(self, frame) -> int | None:
        if not self._timed:
            index = self._next
            self._next += 1
            return index
        if frame.pts is None:
            return None
        index = bisect.bisect_left(self._pts, frame.pts)
        return index if index < len(self._pts) and self._pts[index] == frame.pts else None

    def _read(self, index: int) -> np.ndarray:
        try:
            return self._decode_until(index)
        except self._av.FFmpegError as exc:
            raise InvalidInputError(f"frame {index} of {self.path} could not be decoded ({exc})") from None

    def _decode_until(self, index: int) -> np.ndarray:
        if self._timed:
            key = self._keyframes[bisect.bisect_right(self._keyframes, self._pts[index]) - 1]
            key_index = bisect.bisect_left(self._pts, key)
            # keep decoding when the wanted frame is ahead and no key frame lies in between
            last = self._last_decoded
            ahead = last is not None and last < index and key_index <= last + 1
            if not ahead:
                self._restart(key)
        elif self._last_decoded is None or self._last_decoded >= index:
            self._restart()
        for frame in self._decoder:
            found = self._index_of(frame)
            if found is None:
                continue
            self._last_decoded = found
            array = frame.to_ndarray(format="rgb24")
            if found == index:
                return array
            if found < index and found not in self._cache:
                self._remember(found, array)
            if found > index:
                break
        # the decoder ran past the end (or past the frame) without producing it
        self._last_decoded = None
        raise InvalidInputError(f"frame {index} of {self.path} could not be decoded (the file may be truncated)")

    def close(self) -> None:
        super().close()
        if self._container is not None:
            self._container.close()
            self._container = None
        self._decoder = None


def open_video(source, cache_frames: int = DEFAULT_CACHE_FRAMES) -> Video:
    """A video from a file (any container FFmpeg reads), a folder of frames, an image file (a
    one-frame video), a (T, H, W, 3) uint8 array or a list of images; a :class:`Video` is returned as is."""
    if isinstance(source, Video):
        return source
    if isinstance(source, np.ndarray) or (isinstance(source, Sequence) and not isinstance(source, (str, bytes))):
        return ArrayVideo(source)
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"unsupported video type {type(source).__name__}; pass a video file, a folder of "
                                "frames, or a (T, H, W, 3) uint8 array")
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInputError(f"video not found: {path}")
    if path.is_dir():
        return FolderVideo(path, cache_frames)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ArrayVideo([read_image(path)], name=str(path))
    return ContainerVideo(path, cache_frames)


# ---- writing ----
def _pick_codec(av, preferred: str | None) -> str:
    candidates = [preferred] if preferred else ["libx264", "h264", "mpeg4"]
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - unknown or decode-only codec
            continue
    raise InvalidInputError(f"no usable video encoder among {candidates} in this FFmpeg build")


class VideoWriter:
    """Write RGB uint8 frames to a video file (H.264 when available, else MPEG-4 Part 2).

        with VideoWriter("out.mp4", fps=24) as writer:
            writer.write(frame)
    Odd frame sizes are padded by one pixel (4:2:0 chroma needs even sizes).
    """

    def __init__(self, path: str | os.PathLike, fps: float = 24.0, codec: str | None = None, quality: int = 20,
                 keyframe_interval: int | None = None):
        self._av = _import_av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec = _pick_codec(self._av, codec)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.quality = quality
        self.keyframe_interval = keyframe_interval
        self._container = self._av.open(str(self.path), mode="w")
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames_written = 0

    def write(self, frame) -> None:
        array = to_rgb_array(frame)
        height, width = array.shape[:2]
        if self._stream is None:
            self._size = (height, width)
            stream = self._container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            if self.codec in ("libx264", "h264"):
                stream.options = {"crf": str(self.quality)}
            else:
                stream.bit_rate = 8_000_000
            if self.keyframe_interval:
                stream.codec_context.gop_size = int(self.keyframe_interval)
            self._stream = stream
        elif (height, width) != self._size:
            raise InvalidInputError(f"frame {self.frames_written} is {width}x{height} but the video is "
                                    f"{self._size[1]}x{self._size[0]}")
        if height % 2 or width % 2:
            array = np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_overlay_video(path: str | os.PathLike, video, masks_per_frame, fps: float | None = None,
                        labels_per_frame=None, alpha: float = 0.5) -> Path:
    """Blend masks over the frames and encode them to ``path``.

    masks_per_frame: for each frame index (a dict or a sequence aligned with the video), an
    (N, H, W) bool array, or a {obj_id: (H, W) mask} dict (colours follow the object ids so an
    object keeps its colour through the video). Frames without masks are written plain.
    """
    from .overlay import PALETTE, draw_overlay

    video = open_video(video)
    fps = fps or video.fps or 24.0
    lookup = masks_per_frame if isinstance(masks_per_frame, dict) else dict(enumerate(masks_per_frame))
    with VideoWriter(path, fps=fps) as writer:
        for index in range(len(video)):
            image = video.frame(index)
            masks = lookup.get(index)
            if masks is None:
                writer.write(image)
                continue
            if isinstance(masks, dict):
                # recolour by object id: draw each object alone with its palette slot
                canvas = image
                for obj_id, mask in masks.items():
                    colour_index = int(obj_id) % len(PALETTE)
                    layered = np.zeros((colour_index + 1, *np.asarray(mask).shape), dtype=bool)
                    layered[colour_index] = np.asarray(mask, dtype=bool)
                    canvas = np.asarray(draw_overlay(canvas, layered, alpha=alpha))
                writer.write(canvas)
            else:
                writer.write(np.asarray(draw_overlay(image, np.asarray(masks, dtype=bool), alpha=alpha)))
    return Path(path)
