"""Drives the engine's /dicomweb with the third-party `dicomweb-client` (and pydicom).

Usage: dicomweb_client_check.py BASE_URL TOKEN FILE...   (prints OK, or raises)
"""
import sys

import pydicom
from dicomweb_client.api import DICOMwebClient

base, token, files = sys.argv[1], sys.argv[2], sys.argv[3:]
client = DICOMwebClient(url=base + "/dicomweb", headers={"Authorization": "Bearer " + token})
originals = [pydicom.dcmread(f) for f in files]

# STOW-RS: every instance stored, none failed.
answer = client.store_instances(originals)
assert "FailedSOPSequence" not in answer, answer
assert len(answer.ReferencedSOPSequence) == len(originals), answer

first = originals[0]
study, series, sop = first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID

# QIDO-RS.
found = client.search_for_studies(search_filters={"PatientID": first.PatientID})
assert len(found) == 1, found
assert pydicom.Dataset.from_json(found[0]).StudyInstanceUID == study
in_series = client.search_for_instances(study_instance_uid=study, series_instance_uid=series)
assert len(in_series) == len(originals), in_series
paged = client.search_for_instances(study_instance_uid=study, limit=1, offset=1)
assert len(paged) == 1, paged

# WADO-RS: the instance as stored, its values and pixels the original's.
back = client.retrieve_instance(study, series, sop)
assert back.SOPInstanceUID == sop
assert str(back.PatientName) == str(first.PatientName), (back.PatientName, first.PatientName)
assert back.PixelData == first.PixelData
everything = client.retrieve_study(study)
assert sorted(d.SOPInstanceUID for d in everything) == sorted(d.SOPInstanceUID for d in originals)

# Metadata, frames, rendered.
meta = client.retrieve_series_metadata(study, series)
assert len(meta) == len(originals)
m = pydicom.Dataset.from_json(meta[0])
assert m.StudyInstanceUID == study
frames = client.retrieve_instance_frames(study, series, sop, frame_numbers=[1])
assert frames[0] == first.PixelData, (len(frames[0]), len(first.PixelData))
png = client.retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
assert png[:8] == b"\x89PNG\r\n\x1a\n"
print("OK")
