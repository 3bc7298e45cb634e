"""Reading videos (containers through PyAV, folders of frames, arrays) and writing overlay videos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from opensam3.data.video_io import ArrayVideo, ContainerVideo, FolderVideo, VideoWriter, open_video, write_overlay_video
from opensam3.errors import InvalidInputError

HEIGHT, WIDTH, FRAMES = 48, 64, 30


def frame_value(t: int) -> int:
    return 8 * t


def make_frames(count: int = FRAMES) -> list[np.ndarray]:
    frames = []
    for t in range(count):
        frame = np.full((HEIGHT, WIDTH, 3), frame_value(t), dtype=np.uint8)
        frame[10:20, t:t + 10] = 255
        frames.append(frame)
    return frames


def centre(frame: np.ndarray) -> int:
    return int(frame[35:45, 40:60].mean())


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with VideoWriter(path, fps=10, keyframe_interval=7) as writer:
        for frame in make_frames():
            writer.write(frame)
    return path


def test_container_metadata(mp4):
    with open_video(mp4) as video:
        assert isinstance(video, ContainerVideo)
        assert len(video) == FRAMES
        assert video.size == (HEIGHT, WIDTH)
        assert video.fps == pytest.approx(10.0)
        assert len(video._keyframes) > 1  # several key frames: random access must seek


def test_container_random_access(mp4):
    video = open_video(mp4, cache_frames=3)
    for index in [0, 5, 29, 3, 14, 15, 16, 0, 28, 7, 7]:
        frame = video.frame(index)
        assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8
        assert abs(centre(frame) - frame_value(index)) <= 3, index
        assert len(video._cache) <= 3
    assert [abs(centre(f) - frame_value(t)) <= 3 for t, f in enumerate(video)] == [True] * FRAMES
    video.close()


def test_mpeg4_codec(tmp_path):
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=5, codec="mpeg4") as writer:
        for frame in make_frames(6):
            writer.write(frame)
    video = open_video(path)
    assert len(video) == 6
    assert abs(centre(video.frame(5)) - frame_value(5)) <= 4


def test_odd_size_is_padded(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=5) as writer:
        for _ in range(3):
            writer.write(np.zeros((31, 45, 3), dtype=np.uint8))
    assert open_video(path).size == (32, 46)


def test_folder_sorted_by_frame_number(tmp_path):
    frames = make_frames(12)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{t}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    video = open_video(tmp_path)
    assert isinstance(video, FolderVideo)
    assert len(video) == 12 and video.size == (HEIGHT, WIDTH)
    assert [p.name for p in video.paths][:4] == ["0.png", "1.png", "2.png", "3.png"]
    for t in (11, 0, 10, 2):
        assert np.array_equal(video.frame(t), frames[t])


def test_folder_of_jpegs_falls_back_to_name_order(tmp_path):
    for name, value in (("b.jpg", 200), ("a.jpg", 100), ("c.JPEG", 50)):
        Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(tmp_path / name)
    video = open_video(tmp_path)
    assert [int(video.frame(t).mean()) // 10 for t in range(3)] == [10, 20, 5]


def test_array_video_and_image_file(tmp_path):
    frames = np.stack(make_frames(4))
    video = open_video(frames)
    assert isinstance(video, ArrayVideo) and len(video) == 4
    assert np.array_equal(video[3], frames[3])
    Image.fromarray(frames[1]).save(tmp_path / "one.png")
    single = open_video(tmp_path / "one.png")
    assert len(single) == 1 and np.array_equal(single.frame(0), frames[1])


def test_errors(tmp_path, mp4):
    with pytest.raises(InvalidInputError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="no frames found"):
        open_video(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InvalidInputError, match="not a readable video"):
        open_video(corrupt)
    video = open_video(mp4)
    with pytest.raises(InvalidInputError, match="out of range"):
        video.frame(FRAMES)
    with pytest.raises(InvalidInputError, match="out of range"):
        video.frame(-1)
    with pytest.raises(InvalidInputError, match="integer"):
        video.frame(1.5)
    with pytest.raises(InvalidInputError, match="no frames"):
        open_video([])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(InvalidInputError, match="one size"):
        open_video(mixed).frame(1)


def test_truncated_file_fails_cleanly(tmp_path, mp4):
    data = mp4.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    try:
        video = open_video(truncated)
        for _ in video:
            pass
    except InvalidInputError:
        pass


def test_write_overlay_video(tmp_path):
    frames = np.stack(make_frames(5))
    masks = {t: {1: np.zeros((HEIGHT, WIDTH), bool), 2: np.ones((HEIGHT, WIDTH), bool)} for t in range(0, 5, 2)}
    masks[0][1][:10] = True
    out = write_overlay_video(tmp_path / "overlay.mp4", frames, masks, fps=5)
    video = open_video(out)
    assert len(video) == 5 and video.size == (HEIGHT, WIDTH)
    # frames with masks are tinted, frames without are not
    assert abs(centre(video.frame(1)) - frame_value(1)) <= 3
    assert abs(centre(video.frame(2)) - frame_value(2)) > 10


def test_frames_are_read_only_views(tmp_path):
    frames = make_frames(2)
    video = open_video(frames)
    with pytest.raises(ValueError):
        video.frame(0)[0, 0, 0] = 1
    frames[0][0, 0, 0] = 7  # the caller's arrays stay writable
