"""The registered model's pyfunc pieces that need no registered model: its input example, image decoding."""
import base64
import io

import pytest

from blipexp import serving


def test_input_example_is_a_base64_png():
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(serving.example_image_base64())))
    assert image.format == "PNG"


def test_served_images_are_prepared_like_training_images():
    """RGBA goes on white (as in training), not on black as a plain convert("RGB") would do."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(buffer, format="PNG")
    assert serving.load_image(buffer.getvalue()).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match="row 3: the data is not a readable image"):
        serving.load_image(b"not an image", row=3)
