"""Face identity: keep the right person, sort and cluster face sets, score who a swap looks like.

Thresholds: each face becomes a 128-number embedding from dlib's face recognition network, and the identity
distance between two faces is the Euclidean distance between their embeddings (frames of one person in one
video usually lie within 0.3 of each other; the two test portraits, two different women, are 0.7 apart). The
default threshold is 0.6, the decision distance dlib documents for this model: two faces closer than that are
taken to be the same person. If the right person's faces are being dropped (poor light, profiles, small
faces), raise it a little (0.65); if someone else's faces get through (look-alikes, relatives), lower it
(0.5), or give that person's photo with ``--exclude`` so that each face goes to whichever person it is nearer.

Needs the optional extra: ``pip install 'changeling[identity]'`` (dlib and its CC0 model files). The modules
import without it; building a :class:`~changeling.identity.embed.FaceEmbedder` raises a ``UserError`` that
says how to install it.
"""

from changeling.identity.cluster import cluster_embeddings, cluster_faces, gather_clusters, move_into_clusters
from changeling.identity.embed import (
    INSTALL_HINT,
    SAME_PERSON_DISTANCE,
    FaceEmbedder,
    box_from_landmarks,
    distances,
)
from changeling.identity.match import IdentityFilter
from changeling.identity.score import identity_distances, identity_score
from changeling.identity.sort import SORT_KEYS, SortKey, sort_faces, unsort_faces

__all__ = [
    "INSTALL_HINT",
    "SAME_PERSON_DISTANCE",
    "SORT_KEYS",
    "FaceEmbedder",
    "IdentityFilter",
    "SortKey",
    "box_from_landmarks",
    "cluster_embeddings",
    "cluster_faces",
    "distances",
    "gather_clusters",
    "identity_distances",
    "identity_score",
    "move_into_clusters",
    "sort_faces",
    "unsort_faces",
]
