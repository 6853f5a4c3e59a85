"""The napari plugin (npe2 manifest ``napari.yaml``; ``pip install -e ".[napari]"``): a reader for
CTC sequence folders and 3D TIFFs, the widgets "Segment nuclei" and "Save as CTC result"."""
