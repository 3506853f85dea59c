"""Examples of the HL7 FHIR Personal Health Device Implementation Guide (STU 2), as fixtures.

Specification material, copied unchanged in content (re-indented only):

- `BUNDLE_EXAMPLE_1`: ``input/examples/bundle-example-1.json`` of the IG's source
  repository, github.com/HL7/phd, commit 5af8412f26a40456084790f8d23a822f04f469ae, published
  as "Bundle-bundle-example-1": "a full transaction bundle where the Patient and Device
  resources are using a conditional create transaction" (the Patient, the gateway Device
  ``4C-4E-49-12-34-56-FF-FF``, the Nonin pulse oximeter ``00-1C-05-04-00-00-78-25``, a
  coincident time stamp, an SpO2 and a pulse rate Observation, all linked by ``urn:uuid``).

The IG's identifier of the Patient in ``ifNoneExist`` differs from the one in the resource
(``2.9991`` against ``2.999.1``); kept as published: egenmon matches the Patient entry to
the gateway's patient, never by that identifier.
"""

import json
from typing import Any

BUNDLE_EXAMPLE_1: dict[str, Any] = json.loads(
    r"""
{
 "resourceType": "Bundle",
 "id": "bundle-example-1",
 "type": "transaction",
 "entry": [
  {
   "fullUrl": "urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2",
   "resource": {
    "resourceType": "Patient",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdPatient"
     ]
    },
    "id": "patient-001",
    "identifier": [
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
         "code": "MR",
         "display": "Medical record number"
        }
       ]
      },
      "system": "urn:oid:2.999.1.2.3.4.5.6.7.8.10",
      "value": "sisansarahId"
     }
    ],
    "name": [
     {
      "family": "Gyannea",
      "given": [
       "Sisansarah"
      ]
     }
    ]
   },
   "request": {
    "method": "POST",
    "url": "Patient",
    "ifNoneExist": "identifier=urn:oid:2.9991.2.3.4.5.6.7.8.10|sisansarahId"
   }
  },
  {
   "fullUrl": "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294",
   "resource": {
    "resourceType": "Device",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhgDevice"
     ]
    },
    "id": "phg-001",
    "identifier": [
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers",
         "code": "SYSID",
         "display": "IEEE 11073 System Identifier"
        }
       ]
      },
      "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
      "value": "4C-4E-49-12-34-56-FF-FF"
     }
    ],
    "type": {
     "coding": [
      {
       "system": "urn:iso:std:iso:11073:10101",
       "code": "531981",
       "display": "MDC_MOC_VMS_MDS_AHD"
      }
     ],
     "text": "Application Hosting Device, a.k.a. PHG"
    },
    "specialization": [
     {
      "systemType": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "528457",
         "display": "MDC_DEV_SPEC_PROFILE_GENERIC"
        }
       ],
       "text": "Device following the IEEE 11073-10206 standard but no specific specialization"
      },
      "version": "2"
     }
    ],
    "version": [
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532352",
         "display": "MDC_REG_CERT_DATA_CONTINUA_VERSION"
        }
       ],
       "text": "Continua version"
      },
      "value": "6.0"
     }
    ],
    "property": [
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532353",
         "display": "MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaPHDInterfaceIDs",
          "code": "4",
          "display": "Pulse Oximeter certified"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532355",
         "display": "MDC_REG_CERT_DATA_CONTINUA_AHD_CERT_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaHFS",
          "code": "0",
          "display": "observation-upload-soap"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532355",
         "display": "MDC_REG_CERT_DATA_CONTINUA_AHD_CERT_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaHFS",
          "code": "3",
          "display": "observation-upload-hdata"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532355",
         "display": "MDC_REG_CERT_DATA_CONTINUA_AHD_CERT_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaHFS",
          "code": "7",
          "display": "observation-upload-fhir"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532355",
         "display": "MDC_REG_CERT_DATA_CONTINUA_AHD_CERT_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaHFS",
          "code": "2",
          "display": "capabilities"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532355",
         "display": "MDC_REG_CERT_DATA_CONTINUA_AHD_CERT_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaHFS",
          "code": "6",
          "display": "aps"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
         "code": "532354.0",
         "display": "negated-regulation-status"
        }
       ]
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://terminology.hl7.org/CodeSystem/v2-0136",
          "code": "Y",
          "display": "Yes"
         }
        ],
        "text": "Device is not regulated"
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68220",
         "display": "MDC_TIME_SYNC_PROTOCOL"
        }
       ]
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "urn:iso:std:iso:11073:10101",
          "code": "532226",
          "display": "MDC_TIME_SYNC_NTPV4"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68221",
         "display": "MDC_TIME_SYNC_ACCURACY"
        }
       ]
      },
      "valueQuantity": [
       {
        "value": 120000000,
        "system": "http://unitsofmeasure.org",
        "code": "us"
       }
      ]
     }
    ]
   },
   "request": {
    "method": "POST",
    "url": "Device",
    "ifNoneExist": "identifier=urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680|4C-4E-49-12-34-56-FF-FF"
   }
  },
  {
   "fullUrl": "urn:uuid:c87cc91b-8b31-4e6f-b636-75e52891d10a",
   "resource": {
    "resourceType": "Device",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdDevice"
     ]
    },
    "id": "phd-001",
    "identifier": [
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers",
         "code": "SYSID",
         "display": "IEEE 11073 System Identifier"
        }
       ]
      },
      "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
      "value": "00-1C-05-04-00-00-78-25"
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ContinuaDeviceIdentifiers",
         "code": "BTMAC",
         "display": "Bluetooth MAC Address"
        }
       ]
      },
      "system": "http://hl7.org/fhir/sid/eui-48/bluetooth",
      "value": "00-1C-05-00-78-25"
     }
    ],
    "manufacturer": "Nonin Medical, Inc.",
    "serialNumber": "0400007825",
    "deviceName": [
     {
      "name": "Nonin_Medical_Inc._323552",
      "type": "user-friendly-name"
     }
    ],
    "modelNumber": "Model 3150",
    "type": {
     "coding": [
      {
       "system": "urn:iso:std:iso:11073:10101",
       "code": "65573",
       "display": "MDC_MOC_VMS_MDS_SIMP"
      }
     ],
     "text": "Personal Health Device"
    },
    "specialization": [
     {
      "systemType": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "528388",
         "display": "MDC_DEV_SPEC_PROFILE_PULS_OXIM"
        }
       ],
       "text": "Pulse Oximeter"
      },
      "version": "1"
     }
    ],
    "version": [
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "531976",
         "display": "MDC_ID_PROD_SPEC_FW"
        }
       ],
       "text": "Firmware revision"
      },
      "value": "0.9C"
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532352",
         "display": "MDC_REG_CERT_DATA_CONTINUA_VERSION"
        }
       ],
       "text": "Continua version"
      },
      "value": "1.0"
     }
    ],
    "property": [
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "532353",
         "display": "MDC_REG_CERT_DATA_CONTINUA_CERT_DEV_LIST"
        }
       ],
       "text": "Each element of the certified interfaces list as a separate property"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaPHDInterfaceIDs",
          "code": "4",
          "display": "Pulse Oximeter certified"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
         "code": "532354.0",
         "display": "negated-regulation-status"
        }
       ]
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://terminology.hl7.org/CodeSystem/v2-0136",
          "code": "N",
          "display": "No"
         }
        ],
        "text": "Device is regulated"
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68220",
         "display": "MDC_TIME_SYNC_PROTOCOL"
        }
       ],
       "text": "Time synchronization protocol"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "urn:iso:std:iso:11073:10101",
          "code": "532224",
          "display": "MDC_TIME_SYNC_NONE"
         }
        ],
        "text": "No time synchronization"
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
         "code": "68219.0",
         "display": "mds-time-capab-real-time-clock"
        }
       ],
       "text": "real time clock supported"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://terminology.hl7.org/CodeSystem/v2-0136",
          "code": "Y",
          "display": "Yes"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
         "code": "68219.1",
         "display": "mds-time-capab-set-clock"
        }
       ],
       "text": "setting the time supported"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://terminology.hl7.org/CodeSystem/v2-0136",
          "code": "Y",
          "display": "Yes"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "http://terminology.hl7.org/CodeSystem/ASN1ToHL7",
         "code": "68219.2",
         "display": "mds-time-capab-relative-time"
        }
       ],
       "text": "relative time supported"
      },
      "valueCode": [
       {
        "coding": [
         {
          "system": "http://terminology.hl7.org/CodeSystem/v2-0136",
          "code": "Y",
          "display": "Yes"
         }
        ]
       }
      ]
     },
     {
      "type": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68222",
         "display": "MDC_TIME_RES_ABS"
        }
       ],
       "text": "Resolution of absolute time clock"
      },
      "valueQuantity": [
       {
        "value": 1000000,
        "system": "http://unitsofmeasure.org",
        "code": "us",
        "unit": "us"
       }
      ]
     }
    ]
   },
   "request": {
    "method": "POST",
    "url": "Device",
    "ifNoneExist": "identifier=urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680|00-1C-05-04-00-00-78-25"
   }
  },
  {
   "fullUrl": "urn:uuid:323f0631-6bca-47aa-8adf-69fdaf910108",
   "resource": {
    "resourceType": "Observation",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCoincidentTimeStampObservation"
     ]
    },
    "id": "cts-001",
    "status": "final",
    "code": {
     "coding": [
      {
       "system": "urn:iso:std:iso:11073:10101",
       "code": "67975",
       "display": "MDC_ATTR_TIME_ABS"
      }
     ],
     "text": "Uses Absolute time clock"
    },
    "subject": {
     "reference": "urn:uuid:c87cc91b-8b31-4e6f-b636-75e52891d10a"
    },
    "effectiveDateTime": "2019-09-20T12:40:07.936-04:00",
    "valueDateTime": "2019-09-20T12:40:09.000-04:00",
    "device": {
     "reference": "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294"
    }
   },
   "request": {
    "method": "POST",
    "url": "Observation"
   }
  },
  {
   "fullUrl": "urn:uuid:752b1a27-bbed-47d6-bbb8-b649a5261c52",
   "resource": {
    "resourceType": "Observation",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"
     ]
    },
    "extension": [
     {
      "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
      "valueReference": {
       "reference": "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294"
      }
     },
     {
      "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference",
      "valueReference": {
       "reference": "urn:uuid:323f0631-6bca-47aa-8adf-69fdaf910108"
      }
     }
    ],
    "id": "pulse-ox-001",
    "status": "final",
    "category": [
     {
      "coding": [
       {
        "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
        "code": "phd"
       }
      ]
     },
     {
      "coding": [
       {
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs",
        "display": "Vital Signs"
       }
      ]
     }
    ],
    "code": {
     "coding": [
      {
       "system": "urn:iso:std:iso:11073:10101",
       "code": "150456",
       "display": "MDC_PULS_OXIM_SAT_O2"
      },
      {
       "system": "http://loinc.org",
       "code": "2708-6",
       "display": "Oxygen saturation in Arterial blood"
      }
     ]
    },
    "subject": {
     "reference": "urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2"
    },
    "effectiveDateTime": "2019-09-20T12:40:16.936-04:00",
    "valueQuantity": {
     "value": 98,
     "unit": "%",
     "system": "http://unitsofmeasure.org",
     "code": "%"
    },
    "device": {
     "reference": "urn:uuid:c87cc91b-8b31-4e6f-b636-75e52891d10a"
    },
    "component": [
     {
      "code": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68193",
         "display": "MDC_ATTR_SUPPLEMENTAL_TYPES"
        }
       ],
       "text": "Supplemental information"
      },
      "valueCodeableConcept": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "150588",
         "display": "MDC_MODALITY_SPOT"
        }
       ],
       "text": "Stable mean"
      }
     }
    ]
   },
   "request": {
    "method": "POST",
    "url": "Observation"
   }
  },
  {
   "fullUrl": "urn:uuid:9b676667-4eea-4837-8c6e-df5c1bce9b38",
   "resource": {
    "resourceType": "Observation",
    "meta": {
     "profile": [
      "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation"
     ]
    },
    "extension": [
     {
      "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
      "valueReference": {
       "reference": "urn:uuid:d44b0315-947e-4da5-bb6d-533eceb7a294"
      }
     },
     {
      "url": "http://hl7.org/fhir/uv/phd/StructureDefinition/CoincidentTimeStampReference",
      "valueReference": {
       "reference": "urn:uuid:323f0631-6bca-47aa-8adf-69fdaf910108"
      }
     }
    ],
    "id": "pulse-ox-002",
    "status": "final",
    "category": [
     {
      "coding": [
       {
        "system": "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories",
        "code": "phd"
       }
      ]
     },
     {
      "coding": [
       {
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "vital-signs"
       }
      ]
     }
    ],
    "code": {
     "coding": [
      {
       "system": "urn:iso:std:iso:11073:10101",
       "code": "149530",
       "display": "MDC_PULS_OXIM_PULS_RATE"
      },
      {
       "system": "http://loinc.org",
       "code": "8867-4",
       "display": "Heart rate"
      }
     ]
    },
    "subject": {
     "reference": "urn:uuid:5b7842fe-978d-4182-a41f-0d07a8617bc2"
    },
    "effectiveDateTime": "2019-09-20T12:40:16.936-04:00",
    "valueQuantity": {
     "value": 47,
     "unit": "{beat}/min}",
     "system": "http://unitsofmeasure.org",
     "code": "/min"
    },
    "device": {
     "reference": "urn:uuid:c87cc91b-8b31-4e6f-b636-75e52891d10a"
    },
    "component": [
     {
      "code": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "68193",
         "display": "MDC_ATTR_SUPPLEMENTAL_TYPES"
        }
       ],
       "text": "Supplemental information"
      },
      "valueCodeableConcept": {
       "coding": [
        {
         "system": "urn:iso:std:iso:11073:10101",
         "code": "150588",
         "display": "MDC_MODALITY_SPOT"
        }
       ],
       "text": "Stable mean"
      }
     }
    ]
   },
   "request": {
    "method": "POST",
    "url": "Observation"
   }
  }
 ]
}
"""
)
