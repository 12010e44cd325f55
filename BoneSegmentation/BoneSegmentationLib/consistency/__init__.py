"""Anatomical consistency: a step after the network that makes the 125 labels form one body.

The network decides each voxel from what a window shows; identity errors follow (a vertebra one
level off, a rib on the wrong side, a bone in pieces, the CT table as hand bones). This step
decodes the labels as one skeleton: stray pieces are reassigned (``pieces``), a vessel labelled
as vertebrae beside the column goes (``symmetry``: a vertebra is its own mirror image), the
spine is one consecutive sequence anchored on the skull, ribs and sacrum (``spine``), ribs get their side from
the midline and their number from the vertebra they meet (``ribs``), paired bones their side from
patient coordinates (``sides``), and a bone labelled as a rim around an empty core gets its
core (``marrow``). ``step.make_consistent`` runs them in that order and says what
it changed, for the review ranking.
"""
