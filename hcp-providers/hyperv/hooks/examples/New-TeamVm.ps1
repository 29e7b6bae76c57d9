<#
.SYNOPSIS
    Example HCP replacement create script: the team's own VM creation, run instead of
    HCP's New-HcpVm.ps1 for one image.

.DESCRIPTION
    HCP passes the parameter document of contract 1 as $Hcp (Operation 'create') and expects one
    result record: @{ Id = <the VM's Hyper-V id>; State = <Running|Off>; MarkWritten = $true }.
    HCP then checks on the host that the VM with that Id exists and that its Notes carry HCP's
    mark ($Hcp.Notes, written verbatim). The script must be idempotent: HCP may run it again for
    the same VmId after a lost reply, so it returns the VM it made before.

    Settings:
        images:
          windows-2022:
            create_script: { script: /etc/hcp/hooks/New-TeamVm.ps1, timeout: 45m }
#>
param(
    [Parameter(Mandatory)][hashtable]$Hcp
)

if ($Hcp.Contract -ne 1) {
    throw "this script speaks contract 1, HCP sent contract $($Hcp.Contract)"
}

# A VM made earlier for this VmId (its KVP item HcpVmId) is the answer again.
foreach ($existing in Get-VM) {
    if ($existing.Notes -and $existing.Notes.Contains($Hcp.VmId)) {
        Write-HcpLog -Message "reusing VM $($existing.Name)"
        return @{ Id = $existing.Id.ToString(); State = $existing.State.ToString(); MarkWritten = $true }
    }
}

$diskPath = Join-Path $Hcp.VhdDir ($Hcp.Name + '-' + $Hcp.VmId + '.vhdx')
Write-HcpLog -Message "copying the team's golden image for $($Hcp.Image)"
Copy-Item -Path $Hcp.TemplatePath -Destination $diskPath
$sizeBytes = [int64]$Hcp.DiskGiB * 1073741824
if ((Get-VHD -Path $diskPath).Size -lt $sizeBytes) {
    Resize-VHD -Path $diskPath -SizeBytes $sizeBytes
}

$memoryBytes = [int64]$Hcp.MemoryMiB * 1048576
$switch = $null
if ($Hcp.Networks.Count -gt 0) { $switch = $Hcp.Networks[0].SwitchName }
$vm = New-VM -Name $Hcp.Name -Generation $Hcp.Generation -MemoryStartupBytes $memoryBytes -VHDPath $diskPath -SwitchName $switch
Set-VMProcessor -VM $vm -Count $Hcp.Vcpus
if ($Hcp.Networks.Count -gt 0 -and $Hcp.Networks[0].VlanId -gt 0) {
    Set-VMNetworkAdapterVlan -VM $vm -Access -VlanId $Hcp.Networks[0].VlanId
}

# The team's own customization.
Set-VMFirmware -VM $vm -EnableSecureBoot On -SecureBootTemplate 'MicrosoftWindows'
Enable-VMIntegrationService -VM $vm -Name 'Guest Service Interface'

# HCP's mark: without it HCP cannot find the VM after a restart, and the create job fails.
Set-VM -VM $vm -Notes $Hcp.Notes

if ($Hcp.Start) {
    Write-HcpLog -Message "starting $($Hcp.Name)"
    Start-VM -VM $vm
}
$vm = Get-VM -Id $vm.Id
return @{ Id = $vm.Id.ToString(); State = $vm.State.ToString(); MarkWritten = $true }
