-- Orthanc routing for cxr-triage (tested with Orthanc 1.10 by tests/e2e/test_orthanc_routing.py).
--
-- Sends every frontal chest radiograph (CR, or DX for presentation; Body Part Examined CHEST,
-- THORAX or empty; View Position PA, AP or empty) that Orthanc stores to cxr-triage's DICOM
-- receiver, the modality named TARGET in "DicomModalities". What cxr-triage sends back (its
-- SR and SC: other SOP Classes, Manufacturer "cxr-triage", calling AE OWN_AET) is never
-- routed, so results cannot loop.
--
-- Retries: a store that fails (cxr-triage restarting, the network down) is kept in a list and
-- tried again when a later instance arrives, at most once every RETRY_EVERY_S, until
-- GIVE_UP_AFTER_S (Orthanc 1.10's Lua has no timer). The list lives in Orthanc's memory: a
-- restart of Orthanc forgets it. cxr-triage's own catch-up (CXR_CATCHUP_HOURS) asks Orthanc
-- for the CR/DX studies it never received, whatever happened here.
--
-- Install: copy this file next to orthanc.json and add
--   "LuaScripts": [ "cxr-triage-routing.lua" ],
--   "DicomModalities": { "cxr-triage": [ "CXR_TRIAGE", "<cxr-triage host>", 11112 ] }
-- Nothing here logs patient data: instances are named by Orthanc's identifiers.

local TARGET = 'cxr-triage'           -- the "DicomModalities" entry of cxr-triage's receiver
local OWN_AET = 'CXR_TRIAGE'          -- the AE title cxr-triage stores its results with
local RETRY_EVERY_S = 60
local GIVE_UP_AFTER_S = 6 * 3600

local ROUTED_SOP_CLASSES = {
  ['1.2.840.10008.5.1.4.1.1.1'] = true,    -- Computed Radiography Image Storage
  ['1.2.840.10008.5.1.4.1.1.1.1'] = true,  -- Digital X-Ray Image Storage - For Presentation
}
local CHEST = { [''] = true, ['CHEST'] = true, ['THORAX'] = true }
local FRONTAL = { [''] = true, ['PA'] = true, ['AP'] = true }

local pending = {}       -- instance id -> time of its first failed store
local lastRetry = 0

local function value(tags, name)
  local v = tags[name]
  if type(v) ~= 'string' then
    return ''
  end
  return string.upper((string.gsub(v, '^%s*(.-)%s*$', '%1')))
end

local function isForCxrTriage(tags, origin)
  if origin ~= nil and origin['RemoteAet'] == OWN_AET then
    return false                       -- a result coming back
  end
  if value(tags, 'Manufacturer') == 'CXR-TRIAGE' then
    return false
  end
  return ROUTED_SOP_CLASSES[value(tags, 'SOPClassUID')] == true
    and (value(tags, 'Modality') == 'CR' or value(tags, 'Modality') == 'DX')
    and value(tags, 'PresentationIntentType') ~= 'FOR PROCESSING'
    and CHEST[value(tags, 'BodyPartExamined')] == true
    and FRONTAL[value(tags, 'ViewPosition')] == true
end

-- One synchronous C-STORE through Orthanc's REST API; true when cxr-triage took it.
local function send(instanceId)
  -- (the C-STORE's own timeout is Orthanc's "DicomScuTimeout", 10 s by default)
  local body = DumpJson({ Resources = { instanceId }, Synchronous = true }, true)
  local ok, answer = pcall(RestApiPost, '/modalities/' .. TARGET .. '/store', body, true)
  return ok and answer ~= nil
end

local function retryPending()
  local now = os.time()
  if now - lastRetry < RETRY_EVERY_S then
    return
  end
  lastRetry = now
  for instanceId, since in pairs(pending) do
    if now - since > GIVE_UP_AFTER_S then
      pending[instanceId] = nil
      print('cxr-triage routing: gave up on instance ' .. instanceId)
    elseif send(instanceId) then
      pending[instanceId] = nil
      print('cxr-triage routing: instance ' .. instanceId .. ' sent on retry')
    else
      return                           -- still down: try the others next time
    end
  end
end

function OnStoredInstance(instanceId, tags, metadata, origin)
  retryPending()
  if not isForCxrTriage(tags, origin) then
    return
  end
  if not send(instanceId) then
    pending[instanceId] = os.time()
    print('cxr-triage routing: store of instance ' .. instanceId .. ' failed; will retry')
  end
end
