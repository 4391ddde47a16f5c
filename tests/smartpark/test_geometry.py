import pytest

from smartpark.geometry import (
    GeometryError,
    Line,
    ZoneKind,
    is_simple_polygon,
    point_in_polygon,
    polygon_area,
    segments_intersect,
    validate_scene_config,
)


def _config(**zone) -> dict:
    base = {"name": "S1", "kind": "parking_space", "polygon": [[10, 10], [60, 10], [60, 40], [10, 40]]}
    return {"camera": "cam-1", "width": 320, "height": 240, "zones": [{**base, **zone}]}


def test_a_valid_config_parses():
    raw = _config()
    raw["lines"] = [{"name": "entry", "a": [100, 10], "b": [100, 200]}]
    config = validate_scene_config(raw)
    assert config.zones[0].kind == ZoneKind.PARKING_SPACE
    assert config.zones[0].contains((30, 20)) and not config.zones[0].contains((70, 20))
    assert validate_scene_config(config.to_dict()) == config


@pytest.mark.parametrize(
    ("zone", "message"),
    [
        ({"polygon": [[10, 10], [60, 40], [60, 10], [10, 40]]}, "zone 'S1': the polygon intersects itself"),
        ({"polygon": [[10, 10], [20, 10], [30, 10]]}, "zone 'S1': the polygon is degenerate"),
        ({"polygon": [[10, 10], [400, 10], [60, 40]]}, "zone 'S1': point (400.0, 10.0) lies outside the 320x240 frame"),
        ({"polygon": [[10, 10], [60, 10]]}, "zone 'S1': a polygon needs 3"),
        ({"polygon": [[10, 10], [60, 10], [10, 10], [30, 40]]}, "zone 'S1': the polygon repeats a point"),
        ({"polygon": [[10, 10], [60, "x"], [30, 40]]}, "zone 'S1': coordinates must be finite numbers"),
        ({"polygon": [[10, 10], [60, float("nan")], [30, 40]]}, "zone 'S1': coordinates must be finite numbers"),
        ({"kind": "helipad"}, "zone 'S1': kind must be one of"),
        ({"name": ""}, "a zone needs a name"),
    ],
)
def test_bad_zones_are_refused_naming_the_zone(zone, message):
    with pytest.raises(GeometryError) as error:
        validate_scene_config(_config(**zone))
    assert message in str(error.value)


def test_bad_lines_and_duplicate_names_are_refused():
    raw = _config()
    raw["lines"] = [{"name": "entry", "a": [100, 10], "b": [101, 11]}]
    with pytest.raises(GeometryError, match="line 'entry': the line is degenerate"):
        validate_scene_config(raw)
    raw["lines"] = [{"name": "S1", "a": [100, 10], "b": [100, 200]}]
    with pytest.raises(GeometryError, match="repeated: S1"):
        validate_scene_config(raw)


def test_primitives():
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert polygon_area(square) == 100
    assert point_in_polygon((5, 5), square) and not point_in_polygon((15, 5), square)
    assert is_simple_polygon(square) and not is_simple_polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert segments_intersect((0, 0), (10, 10), (0, 10), (10, 0))
    assert not segments_intersect((0, 0), (1, 1), (2, 2), (3, 5))
    line = Line("l", (0, 0), (0, 10))  # pointing down the screen
    assert line.side((-1, 5)) * line.side((1, 5)) < 0
