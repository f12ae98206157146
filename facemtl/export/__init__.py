"""Export and inference: ONNX / TorchScript models with verified parity, and prediction on images.

- :mod:`.exporter`    ``export_model`` / ``export_checkpoint``: files + metadata, checked for parity
- :mod:`.onnx`, :mod:`.torchscript`  the two formats (export and runner)
- :mod:`.metadata`    the ``<model>.json`` written next to every export
- :mod:`.parity`      largest difference per output against PyTorch, tolerances
- :mod:`.backends`    ONNX Runtime / TorchScript / checkpoint behind one interface
- :mod:`.faces`       the face finder: image pyramid + sliding windows or MCFA's cascade, NMS
- :mod:`.predict`     images in, face records (box, score, landmarks, attributes, ...) out

Nothing is imported here, so ``facemtl.export.predict`` with an ONNX model needs no torch.
"""
