"""`billkit report`: one signed evidence bundle (HTML, OSCAL, SARIF, JUnit) by control, practice and PCI DSS
requirement. collect → model (status per control) → outputs (html, oscal, formats) → manifest (hashes, signature).
"""
