"""The co-divide family shared by DivideMix and PLReMix: the epoch's pieces (``steps``), MixMatch
(``mixmatch``), the two-network loop (``cotrain``) and its file-list datasets (``files``)."""
