-- Demo PACS routing: every series Orthanc receives goes to the gateway (modality "mipgw" in
-- orthanc.json), except the SEGs the gateway sends back, which would only come back as "rejected".
--
-- OnStableSeries, not OnStoredInstance: it runs once a series has had no new instance for
-- StableAge seconds, and the REST store call sends the whole series in ONE association (Lua's own
-- SendToModality takes instances only). The gateway treats a released association whose slices
-- form a complete stack as a complete series; one association per instance would make it judge a
-- partial series complete. Asynchronous: a job Orthanc tracks (GET /jobs), not a blocked callback.
function OnStableSeries(seriesId, tags, metadata)
  if tags['Modality'] == 'SEG' then
    return
  end
  print('mipgw autoroute: sending series ' .. seriesId .. ' to the gateway')
  RestApiPost('/modalities/mipgw/store', DumpJson({Resources = {seriesId}, Asynchronous = true}, true))
end
