//! Export of images to OCI layout directories and oci-archives.
