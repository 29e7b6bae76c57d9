<#
.SYNOPSIS
    Example HCP hook (post_create, pre_delete): registers a VM in a CMDB, or retires it.

.DESCRIPTION
    HCP runs hooks through its wrapper with one parameter, $Hcp: the parameter document of
    contract 1 (see the provider README). Write log lines with Write-HcpLog; they stream into the
    job log. Throw to fail the job: the exception message becomes the job's error message.
    Return an object (or nothing); HCP records it but does not interpret a hook's result.

    Settings:
        hooks:
          post_create: { script: /etc/hcp/hooks/Register-HcpCmdb.ps1, timeout: 2m, secrets: [cmdb_token] }
          pre_delete:  { script: /etc/hcp/hooks/Register-HcpCmdb.ps1, timeout: 2m, secrets: [cmdb_token] }
#>
param(
    [Parameter(Mandatory)][hashtable]$Hcp
)

function Set-VMKvp {
    param(
        [Parameter(Mandatory)][string]$VmId,
        [Parameter(Mandatory)][string]$Name,
        [Parameter(Mandatory)][string]$Value
    )
    $service = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_VirtualSystemManagementService
    $vm = Get-CimInstance -Namespace root\virtualization\v2 -ClassName Msvm_ComputerSystem -Filter "Name='$VmId'"
    $item = ([wmiclass]'root\virtualization\v2:Msvm_KvpExchangeDataItem').CreateInstance()
    $item.Name = $Name
    $item.Data = $Value
    $item.Source = 0
    $arguments = @{ TargetSystem = $vm; DataItems = @($item.PSObject.GetTextXml(1)) }
    Invoke-CimMethod -InputObject $service -MethodName AddKvpItems -Arguments $arguments | Out-Null
}

if ($Hcp.Contract -ne 1) {
    throw "this hook speaks contract 1, HCP sent contract $($Hcp.Contract)"
}

$cmdb = 'https://cmdb.example.internal/api/v2/servers'
$headers = @{ Authorization = 'Bearer ' + $Hcp.Secrets.cmdb_token }

switch ($Hcp.Operation) {
    'post_create' {
        Write-HcpLog -Message "registering $($Hcp.Name) in the CMDB"
        $costCenter = $Hcp.Tags['cost-center']
        if (-not $costCenter) {
            throw "the VM needs a cost-center tag before it can be registered"
        }
        $body = [ordered]@{
            name       = $Hcp.Name
            hcpVmId    = $Hcp.VmId
            hypervId   = $Hcp.NativeId
            project    = $Hcp.Project
            image      = $Hcp.Image
            vcpus      = $Hcp.Vcpus
            memoryMiB  = $Hcp.MemoryMiB
            costCenter = $costCenter
        }
        $json = ConvertTo-Json -InputObject $body -Compress
        $reply = Invoke-RestMethod -Method Post -Uri $cmdb -Headers $headers -Body $json -ContentType 'application/json' -TimeoutSec 60
        Set-VMKvp -VmId $Hcp.NativeId -Name 'CmdbId' -Value $reply.id
        Write-HcpLog -Message "registered as CMDB item $($reply.id)"
        return @{ CmdbId = $reply.id }
    }
    'pre_delete' {
        Write-HcpLog -Message "retiring $($Hcp.Name) in the CMDB"
        $uri = $cmdb + '?hcpVmId=' + [uri]::EscapeDataString($Hcp.VmId)
        Invoke-RestMethod -Method Delete -Uri $uri -Headers $headers -TimeoutSec 60 | Out-Null
        return $null
    }
    default {
        Write-HcpLog -Level warn -Message "nothing to do for $($Hcp.Operation)"
        return $null
    }
}
