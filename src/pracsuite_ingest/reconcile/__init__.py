"""Reconcile: which PracSuite record is which upload's, proven, and what is missing.

Read in this order:
- `match.py` (pure): the evidence linking new records to uploads (a key's proof, or
  name and size), and the snapshot rule that keeps older records out;
- `claims.py` (pure): what is claimed on that evidence under `reconcile.verify`
  (`VerifyMode`: off | ambiguous | all), given the record bytes read so far;
- `verdict.py` (pure): at the deadline, what is missing and why, and which lost
  uploads may be sent again;
- `records.py` (I/O): reading a client's records and their `presign_url` answers;
- `groups.py` (pure): a big poll's uploads as an index, cut into groups of whole names
  that records' links join; `sources.py` (I/O): where a poll reads its uploads;
- `poll.py` (I/O): one poll of one patient: its records, the downloads that let the
  bytes decide (`verification.py`), the claims written; what the round's polls learned;
- `reconciler.py` (I/O): the round: when to poll whom (with `scheduling.py`), the
  deadline, and the verdict's last look.
"""
