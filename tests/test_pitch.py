import json
import random

from blipexp.data.pitch import COUNT_WORDS, PLACES, TEAMS, Scene, random_scene, scenes, write_pitch_dataset


def test_same_seed_same_images_and_captions():
    a, b = scenes(12, seed=3), scenes(12, seed=3)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert all(x.tobytes() == y.tobytes() for (_, x), (_, y) in zip(a, b))
    assert [s for s, _ in scenes(12, seed=4)] != [s for s, _ in a]


def test_caption_is_a_function_of_the_scene():
    scene = Scene(team="red", players=2, zone="left", night=True)
    assert scene.caption == "two red players chase the ball near the left goal at night"
    assert Scene("blue", 1, "middle", False).caption == "a blue player dribbles the ball in the middle of the pitch"


def test_scenes_vary_over_every_attribute():
    rng = random.Random(0)
    drawn = [random_scene(rng) for _ in range(400)]
    assert {s.team for s in drawn} == set(TEAMS)
    assert {s.players for s in drawn} == set(COUNT_WORDS)
    assert {s.zone for s in drawn} == set(PLACES)
    assert {s.night for s in drawn} == {True, False}


def test_team_colour_is_visible_in_the_image():
    for scene, image in scenes(20, seed=1):
        assert TEAMS[scene.team] in {c for _, c in image.getcolors(1 << 16)}


def test_written_folder_is_an_imagefolder_and_is_reused(tmp_path):
    folder = write_pitch_dataset(tmp_path, 10, seed=0)
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all((folder / r["file_name"]).is_file() for r in rows)
    assert rows[0]["text"] == scenes(1, seed=0)[0][0].caption
    stamp = (folder / "metadata.jsonl").stat().st_mtime_ns
    assert write_pitch_dataset(tmp_path, 10, seed=0) == folder
    assert (folder / "metadata.jsonl").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".pitch-*")), "no staging folder left behind"
