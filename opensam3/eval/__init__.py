"""SA-Co evaluation: cgF1 family, COCO mAP, phrase HOTA, J&F (see opensam3.eval.api)."""
