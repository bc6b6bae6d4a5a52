"""QR codes for TOTP enrolment, drawn on the server as inline SVG.

The image is made of paths only (no text, scripts, links or external references), so it passes
the app's Content-Security-Policy unchanged and can be embedded as markup. The otpauth URI it
encodes carries the TOTP secret: the page that shows it is sent with Cache-Control: no-store.
"""

from __future__ import annotations

import segno
from markupsafe import Markup


def svg(data: str, scale: int = 4) -> Markup:
    code = segno.make(data, error="m", micro=False)
    # svg_inline omits the XML declaration and namespace: the element is meant for an HTML page.
    # The data becomes module geometry, never text of the SVG: nothing of it can break out of the markup.
    return Markup(code.svg_inline(scale=scale, dark="#000", light="#fff", svgclass="qr"))  # noqa: S704
